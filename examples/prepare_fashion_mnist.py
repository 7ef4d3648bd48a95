"""Prepare the image example's data: a stratified subset of Fashion-MNIST as PNG class folders.

Fashion-MNIST (Zalando, MIT licence): 28x28 greyscale photos of clothing in 10 classes, 60,000
training and 10,000 test images. We read the idx files the Debian package `dataset-fashion-mnist`
installs (gzip + numpy, no download, no dataset library) and write

    OUT/train/<class>/<i>.png    --train-per-class images per class, from the official training set
    OUT/test/<class>/<i>.png     --test-per-class images per class, from the official test set

so the held-out test images come from Zalando's own test split and can never leak into training.
Class folders carry the real class names (folder-safe: "T-shirt/top" -> "tshirt-top"). The subset
is chosen with --seed and is identical on every machine; a folder written earlier with the same
arguments is kept as is.

    python examples/prepare_fashion_mnist.py --out data/fashion-mnist --train-per-class 100 --test-per-class 50
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
# Index = label id in the idx files (Fashion-MNIST README order).
CLASSES = ("tshirt-top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
MARKER = ".prepared.json"


def read_idx(path: Path) -> np.ndarray:
    """An idx file (magic: 0, 0, dtype code 0x08 = uint8, number of dimensions; then big-endian sizes)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 idx file (header {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header promises {shape} values, file holds {data.size} (truncated?)")
    return data.reshape(shape)


def load_split(split: str, source: Path = SOURCE) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, labels [N] uint8) of 'train' or 't10k'."""
    images = read_idx(source / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(source / f"{split}-labels-idx1-ubyte.gz")
    if len(images) != len(labels):
        raise ValueError(f"{source}: {split} has {len(images)} images but {len(labels)} labels")
    return images, labels


def stratified(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """per_class indices of each class, drawn without replacement, in ascending index order."""
    out = {}
    for c in range(len(CLASSES)):
        pool = np.flatnonzero(labels == c)
        if per_class > len(pool):
            sys.exit(f"asked for {per_class} images of class {CLASSES[c]!r}; the split has {len(pool)}")
        out[c] = np.sort(rng.choice(pool, size=per_class, replace=False))
    return out


def write_split(folder: Path, images: np.ndarray, picks: dict[int, np.ndarray]) -> None:
    from PIL import Image

    for c, idx in picks.items():
        d = folder / CLASSES[c]
        d.mkdir(parents=True, exist_ok=True)
        for i in idx:  # the file name is the image's index in the official split: traceable
            Image.fromarray(images[i]).save(d / f"{int(i)}.png", optimize=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/fashion-mnist")
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source", default=str(SOURCE), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    source = Path(args.source)
    needed = [source / f"{s}-{k}-ubyte.gz" for s in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        print(
            f"Fashion-MNIST not found ({', '.join(missing)}).\n"
            "Install it (Debian/Ubuntu): apt-get install dataset-fashion-mnist",
            file=sys.stderr,
        )
        return 1
    if args.train_per_class < 1 or args.test_per_class < 1:
        ap.error("--train-per-class and --test-per-class must be at least 1")

    out = Path(args.out)
    want = {
        "source": str(source),
        "train_per_class": args.train_per_class,
        "test_per_class": args.test_per_class,
        "seed": args.seed,
        "classes": list(CLASSES),
        "complete": True,
    }
    marker = out / MARKER
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == want:
        print(
            f"{out}: already prepared ({args.train_per_class} train / {args.test_per_class} test per class, "
            f"seed {args.seed}); kept"
        )
        return 0
    stale = [out / "train", out / "test"]
    if any(p.exists() for p in stale):
        if not marker.is_file():  # never delete a folder this script did not write
            sys.exit(f"{out} already holds train/ or test/ that this script did not write; choose another --out")
        for p in stale:
            shutil.rmtree(p, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    # Written first (incomplete) so an interrupted run is recognised as ours and redone next time.
    marker.write_text(json.dumps({**want, "complete": False}, indent=1), encoding="utf-8")

    rng = np.random.default_rng(args.seed)
    counts = {}
    for split, name, per_class in (("train", "train", args.train_per_class), ("t10k", "test", args.test_per_class)):
        images, labels = load_split(split, source)
        picks = stratified(labels, per_class, rng)
        write_split(out / name, images, picks)
        counts[name] = {CLASSES[c]: len(i) for c, i in picks.items()}
        print(
            f"Fashion-MNIST {split}: {len(images)} images; wrote {sum(counts[name].values())} to {out / name}/ "
            f"({per_class} per class x {len(CLASSES)} classes)"
        )
    marker.write_text(json.dumps(want, indent=1), encoding="utf-8")  # marks the folder complete
    print("classes: " + ", ".join(CLASSES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
