"""A small DICOM example: .dcm files in, a classifier out, a .dcm predicted from the command line.

THIS IS A PLUMBING DEMO, NOT A MEDICAL RESULT. It shows that tunesmith reads DICOM (pixel data,
rescale slope/intercept, the stored window, MONOCHROME1/2) the same way it reads PNGs, trains on
it and predicts from it. The only DICOM images at hand offline are the sample files pydicom ships
for its own tests, and few of them are single-frame greyscale CT/MR images that pydicom decodes
without extra decoders (uncompressed or RLE): one CT (CT_small.dcm, 128x128) and two MR
(MR_small.dcm, 64x64; examples_overlay.dcm, 484x300). To get enough files per class we write
augmented copies of them as new .dcm files (random crop, mirror, small intensity scaling and
noise, new SOP Instance UIDs); training and test copies come from the same few source images, so
the accuracy says the pipeline works, not that anything generalises.

    label = the DICOM header's Modality (CT or MR), read from each written file
    data/dicom/{train,test}/<Modality>/<source>-<i>.dcm
    strategy head-only on efficientnet-lite0, then `tunesmith predict RUN one.dcm --json`

    python examples/dicom.py [--train-per-source 12 --test-per-source 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

# Single-frame greyscale CT/MR samples that pydicom decodes natively (checked with
# tunesmith.data.images.load_image). The MR_small_* variants hold the same pixels as MR_small.dcm
# in other encodings, so they would only be duplicates; the JPEG 2000 CTs need an extra decoder.
SOURCES = ("CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm")


def sample_path(name: str) -> Path:
    """A pydicom test file, from the installed package only (get_testdata_file would go online for
    files kept in the separate pydicom-data repository)."""
    import pydicom

    p = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if not p.is_file():
        sys.exit(f"{p} not found: this example needs pydicom's bundled test files (pip install pydicom)")
    return p


def augmented_copy(ds, rng: np.random.Generator, uid_seed: str):
    """A copy of `ds` with randomly cropped (>= 80% of each side), maybe mirrored, slightly rescaled
    and noisy pixels, written back as uncompressed pixel data with new instance UIDs."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out = pydicom.Dataset(ds)  # shallow copy of the elements, deep enough: we replace what changes
    out.file_meta = pydicom.dataset.FileMetaDataset(ds.file_meta)
    a = ds.pixel_array
    lo, hi = float(a.min()), float(a.max())
    h, w = a.shape
    ch, cw = int(h * rng.uniform(0.8, 1.0)), int(w * rng.uniform(0.8, 1.0))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    b = a[top : top + ch, left : left + cw].astype(np.float64)
    if rng.random() < 0.5:
        b = b[:, ::-1]
    b = b * rng.uniform(0.95, 1.05) + rng.normal(0.0, 0.01 * (hi - lo), b.shape)
    b = np.clip(np.rint(b), lo, hi).astype(a.dtype)  # the source's own range fits its BitsStored
    for tag in [t for t in out.keys() if 0x6000 <= t.group <= 0x601E]:  # overlays no longer fit the crop
        del out[tag]
    out.Rows, out.Columns = b.shape
    out.PixelData = np.ascontiguousarray(b).tobytes()
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    uid = generate_uid(entropy_srcs=[uid_seed])  # deterministic: same seed, same UID
    out.SOPInstanceUID = uid
    out.file_meta.MediaStorageSOPInstanceUID = uid
    return out


def prepare(out: Path, per_source: dict[str, int], seed: int) -> dict[str, Counter]:
    """Write the augmented copies; the class folder is the Modality read back from each file."""
    import pydicom

    marker = out / ".dicom-example"
    if out.exists() and any(out.iterdir()) and not marker.is_file():  # never delete a folder we did not write
        sys.exit(f"{out} already holds files this example did not write; choose another --data")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    marker.write_text("written by examples/dicom.py; rewritten on every run\n", encoding="utf-8")
    counts: dict[str, Counter] = {}
    rng = np.random.default_rng(seed)
    for split, n in per_source.items():
        counts[split] = Counter()
        for name in SOURCES:
            ds = pydicom.dcmread(sample_path(name))
            for i in range(n):
                copy = augmented_copy(ds, rng, f"tunesmith-example|{name}|{split}|{i}|{seed}")
                tmp = out / ".tmp.dcm"
                tmp.parent.mkdir(parents=True, exist_ok=True)
                copy.save_as(tmp, enforce_file_format=True)
                modality = str(pydicom.dcmread(tmp, stop_before_pixels=True).Modality)  # the label, from the header
                dest = out / split / modality / f"{Path(name).stem}-{i}.dcm"
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp.replace(dest)
                counts[split][modality] += 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-per-source", type=int, default=12, help="augmented training copies of each source file")
    ap.add_argument("--test-per-source", type=int, default=4, help="augmented test copies of each source file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", default="data/dicom")
    ap.add_argument("--out", default="runs/dicom-head-only")
    args = ap.parse_args()

    import tunesmith

    data = Path(args.data)
    counts = prepare(data, {"train": args.train_per_source, "test": args.test_per_source}, args.seed)
    print(f"sources (pydicom test files): {', '.join(SOURCES)}")
    for split, c in counts.items():
        print(f"wrote {data / split}/: {sum(c.values())} .dcm files {dict(sorted(c.items()))}")

    t0 = time.perf_counter()
    res = tunesmith.finetune(
        {
            "task": "image-classification",
            "out": args.out,
            "model": {"name": "efficientnet-lite0"},
            "data": {"train": str(data / "train"), "test": str(data / "test")},
            "strategy": {"name": "head-only"},
            "train": {"threads": args.threads, "seed": args.seed},
        },
        overwrite=True,
    )
    t = res.test_metrics
    print(
        f"\nhead-only on efficientnet-lite0: test accuracy {t['accuracy']:.3f}, macro-F1 {t['macro_f1']:.3f} "
        f"on {t['n']} held-out copies ({time.perf_counter() - t0:.0f}s). Plumbing demo: the copies come from "
        f"{len(SOURCES)} source images, so this is not a medical result."
    )

    one = sorted((data / "test").glob("*/*.dcm"))[0]
    cmd = ["tunesmith", "predict", str(res.out), str(one), "--json"]
    print(f"\n$ {' '.join(cmd)}   (true label: {one.parent.name})", flush=True)
    exe = shutil.which("tunesmith")
    argv = [exe, *cmd[1:]] if exe else [sys.executable, "-m", "tunesmith", *cmd[1:]]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        return proc.returncode
    print(proc.stdout.strip())
    pred = json.loads(proc.stdout.strip().splitlines()[0])
    print(f"predicted {pred['label']} (score {pred['score']:.3f}); report: {res.files['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
