"""data.streaming: training data larger than memory.

A streamed table is walked in record batches of the columns a run needs, never loaded whole. Reading
(before any model loads) checks every batch as the in-memory path checks a whole table (empty text,
missing labels: a DataError naming the file, the data rows and the fix) and keeps only what is one small
value per row: the label, and a 64-bit hash of the example for the train/validation leak check. Encoding
(once the tokenizer is loaded) walks the file again and writes the token ids of every row into a cache
on disk: one flat int32 `tokens.bin` appended batch by batch, `offsets.npy` (int64, rows + 1) and, where
the tokenizer returns them, `types.bin`, written into a temporary folder and renamed into place. The key
is the file (path, size, modification time), its columns, the tokenizer's files and max_length, so a
second run on the same file reads the cache and tokenises nothing. `MappedRows` serves the rows from
np.memmap: the same dicts the in-memory rows are, with a split (a subset of row indices) a view.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .sources import row_ref, table_file

CACHE_VERSION = 1
STREAMED = ("csv", "tsv", "jsonl", "parquet")  # formats read batch by batch (a JSON array is one value)


@dataclass(frozen=True)
class StreamedFile:
    """One table read in batches: where it is, what it was when read, which columns a run takes."""

    path: str
    fmt: str
    size: int
    mtime_ns: int
    rows: int
    text_column: str
    pair_column: str | None
    batch_rows: int

    def stamp(self) -> list:
        return [str(Path(self.path).resolve()), self.size, self.mtime_ns, self.fmt, self.text_column, self.pair_column]


# -- reading in batches --------------------------------------------------------------------------
def open_table(path: str, role: str) -> tuple[Path, str]:
    """The file and its format, refused as the in-memory reader refuses (missing, a folder, empty, unknown)."""
    p, fmt = table_file(path, role, ".csv, .tsv, .jsonl or .parquet")
    if fmt not in STREAMED:
        raise DataError(
            f"{p}: data.streaming reads .csv, .tsv, .jsonl and .parquet files batch by batch; a JSON array is one "
            "value that cannot be. Write one object per line (.jsonl), or drop data.streaming for this file"
        )
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty: it has no header and no rows")
    return p, fmt


def _no_column(path: Path, name: str, found: Sequence[str], what: str, flag: str) -> DataError:
    shown = ", ".join(repr(str(c)) for c in found)
    return DataError(f"{path}: no {what} column {name!r}. Columns found: {shown}. Set it with {flag}.")


def _check_columns(path: Path, names: Sequence[str], wanted: dict[str, tuple[str, str]]) -> None:
    for column, (what, flag) in wanted.items():
        if column not in names:
            raise _no_column(path, column, names, what, flag)


def _utf8_error(path: Path) -> DataError:
    """The first byte of the file that is not UTF-8, by line and column, read a block at a time."""
    decoder, line, line_start, pos = codecs.getincrementaldecoder("utf-8")(), 1, 0, 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                head = block[: e.start]
                line += head.count(b"\n")
                if b"\n" in head:
                    line_start = pos + head.rfind(b"\n") + 1
                return DataError(
                    f"{path}: line {line}, column {pos + e.start - line_start + 1}: byte 0x{block[e.start]:02x} is "
                    "not valid UTF-8. tunesmith reads text as UTF-8; re-save the file as UTF-8 (e.g. `iconv -f latin1 "
                    "-t utf-8 in.csv > out.csv`, or in a spreadsheet choose 'CSV UTF-8')."
                )
            line += block.count(b"\n")
            if b"\n" in block:
                line_start = pos + block.rfind(b"\n") + 1
            pos += len(block)
    return DataError(f"{path}: cannot read as UTF-8 text")


def _csv_batches(path: Path, fmt: str, columns: list[str], wanted: dict, batch_rows: int) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    parse = pcsv.ParseOptions(delimiter="," if fmt == "csv" else "\t", newlines_in_values=True)
    read = pcsv.ReadOptions(block_size=1 << 22)

    def arrow_error(e: Exception) -> DataError:
        if "UTF8" in str(e) or "utf8" in str(e).lower():
            return _utf8_error(path)
        return DataError(
            f"{path}: malformed {fmt.upper()} ({e}). Quote fields that contain the separator or line breaks."
        )

    try:  # the header alone (one block read), to name the columns found where one is missing
        names = pcsv.open_csv(
            path, read_options=read, parse_options=parse, convert_options=pcsv.ConvertOptions(column_types={})
        ).schema.names
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            raise DataError(f"{path} is empty: it has no header and no rows") from None
        raise arrow_error(e) from None
    _check_columns(path, names, wanted)
    convert = pcsv.ConvertOptions(  # every value a string, as the in-memory reader's dtype=str
        include_columns=columns,
        column_types={c: pa.string() for c in columns},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:  # (opening reads the first block)
        reader = pcsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as e:
        raise arrow_error(e) from None
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            raise arrow_error(e) from None
        for start in range(0, batch.num_rows, batch_rows):
            part = batch.slice(start, batch_rows)
            yield {c: part.column(c).to_pylist() for c in columns}


def _parquet_batches(path: Path, columns: list[str], wanted: dict, batch_rows: int) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several unrelated types for a corrupt file
        raise DataError(f"{path}: cannot read as Parquet ({type(e).__name__}: {e})") from None
    _check_columns(path, f.schema_arrow.names, wanted)
    for batch in f.iter_batches(batch_size=batch_rows, columns=columns):  # in file order, a row group at a time
        yield {c: batch.column(c).to_pylist() for c in columns}


def _jsonl_batches(path: Path, columns: list[str], wanted: dict, batch_rows: int) -> Iterator[dict]:
    """One object per line (json.loads, as the in-memory reader: the same values, the same errors by line);
    a key an object lacks is a missing value, and a column no object of the first batch has is no column."""
    records: list[dict] = []
    first = True
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8-sig" if i == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}: line {i}, column {e.start + 1}: byte 0x{raw[e.start]:02x} is not valid UTF-8. "
                    "tunesmith reads text as UTF-8; re-save the file as UTF-8."
                ) from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {i} is not valid JSON ({e.msg}); each line must be one object") from None
            if not isinstance(rec, dict):
                raise DataError(
                    f"{path}: line {i} is a JSON {type(rec).__name__}, expected an object like "
                    '{"text": ..., "label": ...}'
                )
            records.append(rec)
            if len(records) == batch_rows:
                yield _jsonl_columns(path, records, columns, wanted, first)
                records, first = [], False
    if records:
        yield _jsonl_columns(path, records, columns, wanted, first)


def _jsonl_columns(path: Path, records: list[dict], columns: list[str], wanted: dict, first: bool) -> dict:
    if first:
        seen = list(dict.fromkeys(k for r in records for k in r))
        _check_columns(path, seen, wanted)
    return {c: [r.get(c) for r in records] for c in columns}


def batches(path: Path, fmt: str, wanted: dict[str, tuple[str, str]], batch_rows: int) -> Iterator[dict]:
    """{column: python values} for the `wanted` columns ({name: (what, flag)}), batch by batch in file order."""
    columns = list(wanted)
    if fmt == "parquet":
        return _parquet_batches(path, columns, wanted, batch_rows)
    if fmt == "jsonl":
        return _jsonl_batches(path, columns, wanted, batch_rows)
    return _csv_batches(path, fmt, columns, wanted, batch_rows)


def example_hashes(texts: list[str], pairs: list[str] | None) -> np.ndarray:
    """A 64-bit hash of each (text, pair): equal examples, equal hashes (the leak check's keys)."""
    out = np.empty(len(texts), dtype=np.uint64)
    for i, t in enumerate(texts):
        h = hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8)
        if pairs is not None:
            h.update(b"\x00" + pairs[i].encode("utf-8", "surrogatepass"))
        out[i] = int.from_bytes(h.digest(), "little")
    return out


# -- the token cache -----------------------------------------------------------------------------
_PREPROCESSOR_FPS: dict[tuple, str] = {}
_WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack", ".gguf", ".ckpt")


def preprocessor_fingerprint(preprocessor) -> str:
    """sha256 of the preprocessor's own files (its folder, less weights), memoised per (path, size, mtime);
    where it was not loaded from a folder, of its serialised form."""
    folder = Path(str(preprocessor.name_or_path))
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in _WEIGHTS)
        stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
        if stamp not in _PREPROCESSOR_FPS:
            h = hashlib.sha256(type(preprocessor).__name__.encode())
            for p in files:
                h.update(p.name.encode() + b"\x00" + p.read_bytes())
            _PREPROCESSOR_FPS[stamp] = h.hexdigest()
        return _PREPROCESSOR_FPS[stamp]
    h = hashlib.sha256(type(preprocessor).__name__.encode())
    backend = preprocessor.backend_tokenizer.to_str() if preprocessor.is_fast else repr(preprocessor.get_vocab())
    h.update(backend.encode())
    return h.hexdigest()


def cache_root() -> Path:
    from ..strategies.feature_cache import cache_dir

    return cache_dir() / "streams"


class TokenStore:
    """A finished cache folder, opened read-only (np.memmap) on first use in each process."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._maps: tuple | None = None

    def __getstate__(self):  # another process (a distributed run) opens its own maps
        return {"folder": self.folder, "_maps": None}

    def maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self._maps is None:
            offsets = np.load(self.folder / "offsets.npy", mmap_mode="r")
            n = int(offsets[-1])

            def flat(name: str) -> np.ndarray:
                # np.memmap refuses an empty file; a file of no tokens has no rows to read anyway
                return np.memmap(self.folder / name, dtype=np.int32, mode="r") if n else np.zeros(0, np.int32)

            types = flat("types.bin") if (self.folder / "types.bin").is_file() else None
            self._maps = (offsets, flat("tokens.bin"), types)
        return self._maps

    def __len__(self) -> int:
        return len(self.maps()[0]) - 1


def token_cache(
    spec: StreamedFile,
    preprocessor_id: str,
    max_length: int,
    encode: Callable[[list[str], list[str] | None], dict[str, list[list[int]]]],
    reporter=None,
) -> tuple[TokenStore, bool]:
    """The file's token ids on disk, tokenised once: -> (the store, whether it was already there).
    `encode(texts, pairs)` -> {"input_ids": [...], "token_type_ids": [...] where the tokenizer has them}."""
    key = hashlib.sha256(json.dumps([CACHE_VERSION, spec.stamp(), preprocessor_id, max_length]).encode()).hexdigest()[
        :32
    ]
    folder = cache_root() / key
    if (folder / "offsets.npy").is_file():
        return TokenStore(folder), True
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{key}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_tokens(spec, tmp, encode)
        try:
            os.rename(tmp, folder)  # atomic: a reader sees no folder or a whole one
        except OSError:  # another process finished the same cache first
            if not (folder / "offsets.npy").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if reporter is not None:
        reporter.info(f"data.streaming: tokenised {spec.rows} rows of {spec.path} into {folder}")
    return TokenStore(folder), False


def _write_tokens(spec: StreamedFile, tmp: Path, encode: Callable) -> None:
    wanted = {spec.text_column: ("text", "--text-column")}
    if spec.pair_column:
        wanted[spec.pair_column] = ("text-pair", "--text-pair-column")
    n, total = 0, 0
    with open(tmp / "tokens.bin", "wb") as tokens, open(tmp / "ends.bin", "wb") as ends:
        types = None
        for batch in batches(Path(spec.path), spec.fmt, wanted, spec.batch_rows):
            texts = [v if isinstance(v, str) else str(v) for v in batch[spec.text_column]]
            pairs = [v if isinstance(v, str) else str(v) for v in batch[spec.pair_column]] if spec.pair_column else None
            enc = encode(texts, pairs)
            ids = enc["input_ids"]
            lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
            count = int(lengths.sum())
            tokens.write(_flat(ids, count).tobytes())
            if "token_type_ids" in enc:
                types = types or open(tmp / "types.bin", "wb")
                types.write(_flat(enc["token_type_ids"], count).tobytes())
            ends.write((total + np.cumsum(lengths)).tobytes())
            total += int(lengths.sum())
            n += len(ids)
        if types is not None:
            types.close()
    if n != spec.rows:
        raise DataError(
            f"{spec.path} changed while it was read: {spec.rows} rows when checked, {n} when tokenised. "
            "Run again once the file is no longer being written"
        )
    offsets = np.lib.format.open_memmap(tmp / "offsets.npy", mode="w+", dtype=np.int64, shape=(n + 1,))
    offsets[0] = 0
    if n:
        offsets[1:] = np.memmap(tmp / "ends.bin", dtype=np.int64, mode="r")
    offsets.flush()
    del offsets
    os.remove(tmp / "ends.bin")


def _flat(seqs: list[list[int]], count: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int32, count=count)


class MappedRows(Sequence):
    """Encoded rows read from a token cache: rows[i] is the dict the in-memory rows hold ({"input_ids",
    "token_type_ids" where the tokenizer has them, "label" where labelled}, lists of ints); `index`: which of
    the store's rows, in order (a split's); `lengths()` counts tokens from the offsets alone."""

    def __init__(self, store: TokenStore, index: np.ndarray | None = None, labels: np.ndarray | None = None):
        self.store = store
        self.index = np.arange(len(store), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.subset(range(len(self))[i])
        j = int(self.index[i])
        offsets, tokens, types = self.store.maps()
        a, b = int(offsets[j]), int(offsets[j + 1])
        row: dict[str, Any] = {"input_ids": tokens[a:b].tolist()}
        if types is not None:
            row["token_type_ids"] = types[a:b].tolist()
        if self.labels is not None:
            row["label"] = int(self.labels[i])
        return row

    def lengths(self) -> np.ndarray:
        offsets = self.store.maps()[0]
        return offsets[self.index + 1] - offsets[self.index]

    def subset(self, idx: Sequence[int]) -> MappedRows:
        idx = np.asarray(idx, dtype=np.int64)
        return MappedRows(self.store, self.index[idx], None if self.labels is None else self.labels[idx])

    def with_labels(self, label_ids: Sequence[int]) -> MappedRows:
        return MappedRows(self.store, self.index, np.asarray(label_ids, dtype=np.int64))

    def __add__(self, other):
        """Rows of the same cache: one view (a refit's training + validation rows); else a list."""
        if isinstance(other, MappedRows) and other.store.folder == self.store.folder:
            if (self.labels is None) == (other.labels is None):
                labels = None if self.labels is None else np.concatenate([self.labels, other.labels])
                return MappedRows(self.store, np.concatenate([self.index, other.index]), labels)
        return list(self) + list(other)


# -- the examples a streamed read gives ----------------------------------------------------------
class StreamedTextExamples:
    """A streamed table's examples: its labels and leak-check hashes in memory, its texts left in the file.
    `index`: the file's data rows these examples are (a split of it), in order."""

    display_column = "text"

    def __init__(
        self,
        source: str,
        spec: StreamedFile,
        labels: list[str] | None,
        hashes: np.ndarray,
        index: np.ndarray | None = None,
    ):
        self.source, self.spec, self.labels, self.hashes = source, spec, labels, hashes
        self.index = np.arange(spec.rows, dtype=np.int64) if index is None else index
        self.skipped: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.index)

    def display(self, i: int) -> str:
        return f"(streamed: text not kept in memory; {row_ref(self.spec.path, int(self.index[i]))})"

    def dedup_keys(self) -> np.ndarray:
        return self.hashes

    def subset(self, idx: Sequence[int], source: str | None = None) -> StreamedTextExamples:
        idx = np.asarray(idx, dtype=np.int64)
        labels = [self.labels[i] for i in idx] if self.labels is not None else None
        return StreamedTextExamples(source or self.source, self.spec, labels, self.hashes[idx], self.index[idx])

    def rows(self, store: TokenStore) -> MappedRows:
        """This split's rows of the file's token cache."""
        return MappedRows(store, self.index)


def stream_text_examples(
    path: str,
    text_column: str,
    label_column: str,
    pair_column: str | None,
    require_labels: bool,
    role: str,
    batch_rows: int,
) -> StreamedTextExamples:
    """Walk the table in batches of `batch_rows`: check each as the in-memory path checks the whole table,
    keep labels and example hashes; the texts are read again, batch by batch, when they are tokenised."""
    from .preflight import _texts, labels_of

    p, fmt = open_table(path, role)
    st = p.stat()
    wanted = {text_column: ("text", "--text-column")}
    if pair_column:
        wanted[pair_column] = ("text-pair", "--text-pair-column")
    if require_labels:
        wanted[label_column] = ("label", "--label-column")
    labels: list[str] | None = [] if require_labels else None
    canonical: dict[str, str] = {}  # one string object per class, not per row
    hashes: list[np.ndarray] = []
    n = 0
    for batch in batches(p, fmt, wanted, batch_rows):
        texts = _texts(batch[text_column], path, text_column, start=n)
        pairs = _texts(batch[pair_column], path, pair_column, start=n) if pair_column else None
        if labels is not None:
            labels.extend(canonical.setdefault(y, y) for y in labels_of(batch[label_column], path, label_column, n))
        hashes.append(example_hashes(texts, pairs))
        n += len(texts)
    if n == 0:
        raise DataError(f"{p} has a header but no data rows")
    spec = StreamedFile(path, fmt, st.st_size, st.st_mtime_ns, n, text_column, pair_column, batch_rows)
    return StreamedTextExamples(path, spec, labels, np.concatenate(hashes))
