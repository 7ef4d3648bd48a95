"""Read tables (CSV/TSV, JSONL/JSON, Parquet) into pandas with errors that name the file and row."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from ..errors import DataError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _decode_utf8(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(
            f"{path}: line {line}, column {col}: byte 0x{raw[e.start]:02x} is not valid UTF-8. "
            "tunesmith reads text as UTF-8; re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > "
            "out.csv`, or in a spreadsheet choose 'CSV UTF-8')."
        ) from None


def table_file(path: str | Path, role: str, kinds: str = ".csv, .tsv, .jsonl, .json or .parquet") -> tuple[Path, str]:
    """The table file at `path` and its format, or a DataError: missing, a folder (give a `kinds` file), unknown."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{role} file not found: {p}")
    if p.is_dir():
        raise DataError(f"{role} path {p} is a folder; give a {kinds} file")
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{p}: unknown data format {p.suffix or '(no extension)'!r}; supported: {', '.join(sorted(FORMATS))}"
        )
    return p, fmt


def read_table(path: str | Path, role: str = "data") -> pd.DataFrame:
    """One table, every row kept, in file order. Raises DataError with the fix on any problem."""
    p, fmt = table_file(path, role)
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty: it has no header and no rows")
    if fmt == "parquet":
        try:
            df = pd.read_parquet(p)
        except Exception as e:  # pyarrow raises several unrelated types for a corrupt file
            raise DataError(f"{p}: cannot read as Parquet ({type(e).__name__}: {e})") from None
    else:
        text = _decode_utf8(p.read_bytes(), p)
        if fmt in ("csv", "tsv"):
            try:
                df = pd.read_csv(
                    io.StringIO(text),
                    sep="," if fmt == "csv" else "\t",
                    dtype=str,
                    keep_default_na=False,
                    na_filter=False,
                )
            except pd.errors.EmptyDataError:
                raise DataError(f"{p} is empty: it has no header and no rows") from None
            except pd.errors.ParserError as e:
                raise DataError(
                    f"{p}: malformed {fmt.upper()} ({e}). Quote fields that contain the separator or line breaks."
                ) from None
        elif fmt == "jsonl":
            records = []
            for i, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(
                        f"{p}: line {i} is not valid JSON ({e.msg}); each line must be one object"
                    ) from None
                if not isinstance(rec, dict):
                    raise DataError(
                        f"{p}: line {i} is a JSON {type(rec).__name__}, expected an object like "
                        '{"text": ..., "label": ...}'
                    )
                records.append(rec)
            df = pd.DataFrame.from_records(records)
        else:
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{p}: not valid JSON (line {e.lineno}: {e.msg}). For one object per line use .jsonl"
                ) from None
            if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
                raise DataError(f"{p}: expected a JSON array of objects")
            df = pd.DataFrame.from_records(obj)
    if len(df) == 0:
        raise DataError(f"{p} has a header but no data rows")
    return df


def row_ref(path: str | Path, index: int) -> str:
    """How errors name a row: 1-based data rows, header excluded (row 1 is line 2 of a CSV)."""
    return f"{path} row {index + 1}"
