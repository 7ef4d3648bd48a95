"""tunesmith vs the Hugging Face Trainer: image classification, same images, model, head and epochs.

Data: a stratified Fashion-MNIST subset written as PNG class folders (examples/prepare_fashion_mnist.py):
--train images per class to train on, --validation more per class (tunesmith's per-epoch model
choice; HF does none), and --test per class from Fashion-MNIST's own test split, scored once.
Model: EfficientNet-Lite0 with its ImageNet weights (tunesmith.models.efficientnet_lite), pooled
1280-d features -> dropout 0.1 -> a new 10-class linear head, in every configuration.

What it compares (one invocation, every figure from the same run):

  hf-trainer      transformers.Trainer as the HF image-classification tutorial writes it: a torch
                  Dataset that opens each PNG with PIL and applies per-sample training transforms
                  (RandomResizedCrop(224, scale=(0.6, 1)) and a horizontal flip, written with PIL as
                  torchvision's are, since torchvision is not available here) + ToTensor + Normalize
                  with the model's mean/std; default_data_collator; dataloader_num_workers=2; an
                  nn.Module wrapper returning {"loss", "logits"}. fp32, one lr for all weights.
                  Test images: the model's eval preprocessing (centre crop, bicubic resize).
  hf-trainer-bf16 the same with TrainingArguments(bf16=True) (CPU bf16 autocast), one flag away
  ts-full         tunesmith.finetune, strategy "full", its defaults (precision auto, warmup, 10x head lr)
  ts-full-fp32    the same with train.precision="fp32" (like for like with HF's fp32)
  ts-head-only    strategy "head-only": backbone features computed once, head trained on them
                  (its default 50 epochs, patience 10)
  pipe-hf         the HF data pipeline alone, no model: PIL decode + augment + collate, one epoch
                  through the DataLoader (num_workers=2, and 0 for reference)
  pipe-ts         tunesmith's data pipeline alone, no model: decode + check every image once,
                  decode + resize to 224 once (cached as uint8), then per epoch: batched kornia
                  augmentation + normalisation in collate

Each configuration runs in a fresh child process (this script with --one CONFIG), one after
another, each pinned to --threads torch threads, so its peak RSS (ru_maxrss) is its own; HF's
DataLoader workers are processes of their own, reported separately (largest worker). Held-out
accuracy is on the test images, which no run sees before its final score.

Timing: images/s cover training only (HF: trainer.train(); tunesmith: result.timings["train_seconds"],
which excludes its per-epoch evaluations; head-only: the head epochs on features, with the one
feature pass reported next to it). "wall s" is the whole configuration in the child, imports excluded.

    python bench/vision_vs_hf_trainer.py              # 100 train / 10 val / 50 test per class, 1 epoch
    python bench/vision_vs_hf_trainer.py --quick      # 8 / 2 / 4 per class smoke check
    python bench/vision_vs_hf_trainer.py --epochs 2 --train 200

Results: stdout, and bench/results/vision_vs_hf_trainer.{json,md} (--quick: ..._quick.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Shared with the text and speech benchmarks, not copied (DESIGN rule 12).
from child_runs import (  # noqa: E402
    ROOT,
    add_child_args,
    add_common_args,
    cell,
    contention_md,
    env_versions,  # noqa: E402
    failures_md,
    finish,
    parse_configs,
    pin_threads,
    spawn,
    write_child_result,
)

DEFAULT_CONFIGS = ["pipe-hf", "pipe-ts", "hf-trainer", "hf-trainer-bf16", "ts-full", "ts-full-fp32", "ts-head-only"]
ALL_CONFIGS = DEFAULT_CONFIGS
LABELS = {
    "hf-trainer": "HF Trainer (PIL per-sample transforms, 2 workers, fp32)",
    "hf-trainer-bf16": "HF Trainer, the same with bf16=True",
    "ts-full": "tunesmith full (precision auto)",
    "ts-full-fp32": "tunesmith full, precision fp32",
    "ts-head-only": "tunesmith head-only",
    "pipe-hf": "HF data pipeline alone",
    "pipe-ts": "tunesmith data pipeline alone",
}
BATCH, LR, SEED, SIZE, CROP_SCALE, DROPOUT = 32, 5e-5, 42, 224, (0.6, 1.0), 0.1


# --------------------------------------------------------------------------------------------
# the HF side, written as a user following the HF image-classification tutorial would
# --------------------------------------------------------------------------------------------


def _folder_samples(root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    samples = [(str(f), i) for i, c in enumerate(classes) for f in sorted((root / c).glob("*.png"))]
    return samples, classes


def _random_resized_crop(img, size: int, scale=CROP_SCALE, ratio=(3 / 4, 4 / 3)):
    """torchvision.transforms.RandomResizedCrop's algorithm (torch RNG, so DataLoader workers differ)."""
    import torch
    from PIL import Image

    w, h = img.size
    area = w * h
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect = math.exp(torch.empty(1).uniform_(log_r[0], log_r[1]).item())
        cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, size=(1,)).item())
            left = int(torch.randint(0, w - cw + 1, size=(1,)).item())
            break
    else:  # torchvision's fallback: the central crop
        cw, ch, left, top = w, h, 0, 0
    return img.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))


class HFImageDataset:
    """Tutorial style: each __getitem__ opens the file and runs the transforms on that one image."""

    def __init__(self, samples, train: bool, mean, std):
        import numpy as np

        self.samples, self.train = samples, train
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        import numpy as np
        import torch
        from PIL import Image

        from tunesmith.models.efficientnet_lite import preprocess

        path, label = self.samples[i]
        with Image.open(path) as im:
            img = im.convert("RGB")
        if not self.train:  # the model's own eval preprocessing, as an image_processor would apply it
            return {"pixel_values": preprocess([img], SIZE)[0], "labels": label}
        img = _random_resized_crop(img, SIZE)
        if torch.rand(1).item() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0  # ToTensor
        return {"pixel_values": torch.from_numpy((x - self.mean) / self.std), "labels": label}  # Normalize


def _hf_model(num_labels: int):
    import torch
    from torch import nn

    from tunesmith.models.efficientnet_lite import load_efficientnet_lite0

    class EfficientNetForImageClassification(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = load_efficientnet_lite0()  # ImageNet weights; its 1000-class classifier unused
            self.net.classifier = nn.Identity()
            self.net.dropout = nn.Identity()
            self.dropout = nn.Dropout(DROPOUT)
            self.classifier = nn.Linear(self.net.feature_dim, num_labels)

        def forward(self, pixel_values, labels=None):
            logits = self.classifier(self.dropout(self.net.forward_features(pixel_values)))
            loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
            return {"loss": loss, "logits": logits}

    torch.manual_seed(SEED)
    return EfficientNetForImageClassification()


def _mean_std():
    from tunesmith.models.efficientnet_lite import EfficientNetLiteProcessor

    p = EfficientNetLiteProcessor()
    return p.image_mean, p.image_std


def child_hf(args, bf16: bool = False) -> dict:
    import numpy as np
    import torch
    from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

    t_wall = time.perf_counter()
    data = Path(args.data)
    train, classes = _folder_samples(data / "train")
    test, test_classes = _folder_samples(data / "test")
    assert classes == test_classes, (classes, test_classes)
    mean, std = _mean_std()
    set_seed(SEED)
    model = _hf_model(len(classes))
    targs = TrainingArguments(
        output_dir=str(Path(args.work) / args.one),
        bf16=bf16,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=64,
        learning_rate=LR,
        num_train_epochs=args.epochs,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        seed=SEED,
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=2,
        dataloader_pin_memory=False,
    )
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=HFImageDataset(train, True, mean, std),
        data_collator=default_data_collator,
    )
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = trainer.predict(HFImageDataset(test, False, mean, std))
    predict_seconds = time.perf_counter() - t0
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    acc = float((np.asarray(logits).argmax(-1) == np.asarray([y for _, y in test])).mean())
    n = len(train) * args.epochs
    return {
        "precision": "bf16" if bf16 else "fp32",
        "epochs": args.epochs,
        "samples": n,
        "train_seconds": train_seconds,
        "samples_per_second": n / train_seconds,
        "accuracy": acc,
        "predict_seconds": predict_seconds,
        "params": {
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters()),
        },
        "wall_seconds": time.perf_counter() - t_wall,
        "torch_threads": torch.get_num_threads(),
    }


def child_pipe_hf(args) -> dict:
    """One epoch of decode + augment + collate through the DataLoader, no model."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import default_data_collator

    train, _ = _folder_samples(Path(args.data) / "train")
    mean, std = _mean_std()
    out: dict = {"samples": len(train)}
    for workers in (2, 0):
        torch.manual_seed(SEED)
        loader = DataLoader(
            HFImageDataset(train, True, mean, std),
            batch_size=BATCH,
            shuffle=True,
            num_workers=workers,
            collate_fn=default_data_collator,
        )
        t0 = time.perf_counter()
        n = sum(int(b["pixel_values"].shape[0]) for b in loader)  # includes starting the workers
        secs = time.perf_counter() - t0
        out[f"workers{workers}_seconds_per_epoch"] = secs
        out[f"workers{workers}_samples_per_second"] = n / secs
    out["samples_per_second"] = out["workers2_samples_per_second"]
    out["seconds_per_epoch"] = out["workers2_seconds_per_epoch"]
    out["wall_seconds"] = out["workers2_seconds_per_epoch"] + out["workers0_seconds_per_epoch"]
    return out


# --------------------------------------------------------------------------------------------
# the tunesmith side
# --------------------------------------------------------------------------------------------


def child_pipe_ts(args) -> dict:
    """tunesmith's own pipeline pieces (what finetune runs before and inside its loop), no model."""
    import torch

    from tunesmith.config import AugmentConfig, DataConfig
    from tunesmith.data.batching import row_lengths, train_batches
    from tunesmith.modalities.image import ImageModality
    from tunesmith.models import resolve_model
    from tunesmith.models.vision_backbone import load_image_processor
    from tunesmith.tasks.image_classification import ImageClassificationTask

    inputs = ImageModality()
    t0 = time.perf_counter()
    ex = inputs.read(str(Path(args.data) / "train"), DataConfig(), "training data")  # decodes each image once
    read_s = time.perf_counter() - t0
    processor = load_image_processor(resolve_model("efficientnet-lite0"))
    task = ImageClassificationTask(sorted(set(ex.labels)), processor, augment=AugmentConfig().model_dump())
    t0 = time.perf_counter()
    rows = task.encode(ex, augment=True)  # decode + resize to 224, uint8
    encode_s = time.perf_counter() - t0
    for r, y in zip(rows, ex.labels):
        r["label"] = task.label2id[y]
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    n = 0
    for b in train_batches(row_lengths(rows), BATCH, SEED, 0, grouping=False):
        n += int(task.collate([rows[i] for i in b])["pixel_values"].shape[0])
    epoch_s = time.perf_counter() - t0
    return {
        "samples": n,
        "read_check_seconds": read_s,
        "preprocess_seconds": encode_s,
        "seconds_per_epoch": epoch_s,
        "once_samples_per_second": len(rows) / (read_s + encode_s),
        "samples_per_second": n / epoch_s,
        "wall_seconds": read_s + encode_s + epoch_s,
    }


def child_tunesmith(args, config: str) -> dict:
    import torch

    import tunesmith

    head = config == "ts-head-only"
    data = Path(args.data)
    train: dict = {
        "batch_size": BATCH,
        "early_stopping_patience": None,
        "seed": SEED,
        "threads": args.threads,
        "dropout": DROPOUT,
    }
    if not head:
        train.update(epochs=args.epochs, lr=LR)
    else:
        train["early_stopping_patience"] = 10  # its default; the full rows run every epoch
    if config == "ts-full-fp32":
        train["precision"] = "fp32"
    cfg = {
        "task": "image-classification",
        "out": str(Path(args.work) / config),
        "model": {"name": "efficientnet-lite0"},
        "strategy": {"name": "head-only" if head else "full"},
        "data": {"train": str(data / "train"), "validation": str(data / "val"), "test": str(data / "test")},
        "train": train,
        "augment": {"crop_scale": CROP_SCALE[0], "flip": True},
    }
    t0 = time.perf_counter()
    res = tunesmith.finetune(cfg, quiet=True, overwrite=True)
    wall = time.perf_counter() - t0
    metrics = json.loads((res.out / "metrics.json").read_text(encoding="utf-8"))
    t = res.timings
    out = {
        "precision": metrics["run"]["precision"],
        "epochs": len(res.history),
        "configured": cfg,
        "samples": metrics["train"]["samples"],
        "train_seconds": t["train_seconds"],
        "samples_per_second": t["train_samples_per_second"],
        "accuracy": res.test_metrics["accuracy"],
        "macro_f1": res.test_metrics["macro_f1"],
        "best_epoch": (metrics.get("best_evaluation") or {}).get("epoch"),
        "wall_seconds": wall,
        "total_seconds": t.get("total_seconds"),
        "params": res.params,
        "warnings": res.warnings,
        "torch_threads": torch.get_num_threads(),
    }
    if head:
        out["feature_seconds"] = t.get("feature_seconds")
        out["feature_cache_hit"] = t.get("feature_cache_hit")
    return out


def run_child(args) -> int:
    pin_threads(args.threads)
    if args.one in ("hf-trainer", "hf-trainer-bf16"):
        out = child_hf(args, bf16=args.one == "hf-trainer-bf16")
    elif args.one == "pipe-hf":
        out = child_pipe_hf(args)
    elif args.one == "pipe-ts":
        out = child_pipe_ts(args)
    else:
        out = child_tunesmith(args, args.one)
    return write_child_result(out, args.json, workers=True)  # DataLoader workers: their own peak


# --------------------------------------------------------------------------------------------
# parent: data, children, table
# --------------------------------------------------------------------------------------------


def prepare_data(root: Path, args) -> Path:
    """train/ val/ test/ class folders: the val images are split off the prepared training images."""
    data = root / "data"
    prep = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "prepare_fashion_mnist.py"),
            "--out",
            str(data),
            "--train-per-class",
            str(args.train + args.validation),
            "--test-per-class",
            str(args.test),
            "--seed",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if prep.returncode != 0:
        sys.exit(f"prepare_fashion_mnist.py failed:\n{prep.stdout}\n{prep.stderr}")
    print(prep.stdout.strip(), flush=True)
    for cls in sorted(p for p in (data / "train").iterdir() if p.is_dir()):
        files = sorted(cls.glob("*.png"), key=lambda p: int(p.stem))
        (data / "val" / cls.name).mkdir(parents=True)
        for f in files[args.train :]:
            f.rename(data / "val" / cls.name / f.name)
    return data


def build_report(res: dict) -> tuple[str, dict]:
    rows = res["configs"]

    def ok(n):
        return n in rows and "error" not in rows[n]

    lines = [
        f"tunesmith vs HF Trainer, image classification: EfficientNet-Lite0 (ImageNet) + 10-class linear head, "
        f"Fashion-MNIST {res['n_train']} train / {res['n_val']} validation (tunesmith only) / {res['n_test']} "
        f"held-out test images (28x28 PNG, upscaled to 224), {res['epochs']} epoch(s) for the full rows "
        f"(head-only: its default), batch {BATCH}, lr {LR:g}, {res['threads']} torch threads.",
        "",
        "| configuration | precision | train images/s | train s | wall s | peak RSS MB (main / largest worker) "
        "| held-out acc | other load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in (n for n in ("hf-trainer", "hf-trainer-bf16", "ts-full", "ts-full-fp32", "ts-head-only") if n in rows):
        r = rows[name]
        if "error" in r:
            lines.append(f"| {LABELS[name]} | FAILED: {r['error']} | | | | | | |")
            continue
        sps, train_s = cell(r["samples_per_second"]), cell(r["train_seconds"], "{:.1f}")
        if name == "ts-head-only":
            sps += " (head on features)"
            train_s += f" ({r['epochs']} head epochs) + features {r['feature_seconds']:.1f}"
        rss = f"{r['peak_rss_mb']:.0f}" + (f" / {r['workers_peak_rss_mb']:.0f}" if r.get("workers_peak_rss_mb") else "")
        lines.append(
            f"| {LABELS[name]} | {r['precision']} | {sps} | {train_s} | {cell(r['wall_seconds'])} | {rss} | "
            f"{cell(r.get('accuracy'), '{:.3f}')} | {cell(r.get('other_load_cores'), '{:.2f}')} |"
        )
    lines += [
        "",
        "Data pipeline alone (no model), training images:",
        "",
        "| pipeline | once per run | per epoch | peak RSS MB (main / largest worker) | other load |",
        "|---|---|---|---|---|",
    ]
    if ok("pipe-hf"):
        r = rows["pipe-hf"]
        lines.append(
            "| HF: PIL open + RandomResizedCrop + flip + ToTensor/Normalize per sample, default_data_collator "
            "| — | "
            f"{r['workers2_samples_per_second']:.0f} images/s with 2 workers "
            f"({r['workers2_seconds_per_epoch']:.1f} s), "
            f"{r['workers0_samples_per_second']:.0f} images/s in-process | {r['peak_rss_mb']:.0f}"
            + (f" / {r['workers_peak_rss_mb']:.0f}" if r.get("workers_peak_rss_mb") else "")
            + f" | {r['other_load_cores']:.2f} |"
        )
    if ok("pipe-ts"):
        r = rows["pipe-ts"]
        lines.append(
            "| tunesmith: decode+check, then decode + resize to 224 once (uint8); per epoch kornia "
            "crop/flip/jitter "
            f"+ normalise per batch | {r['once_samples_per_second']:.0f} images/s "
            f"(check {r['read_check_seconds']:.1f} s "
            f"+ preprocess {r['preprocess_seconds']:.1f} s) | {r['samples_per_second']:.0f} images/s "
            f"({r['seconds_per_epoch']:.1f} s, in the training process) | {r['peak_rss_mb']:.0f} | "
            f"{r['other_load_cores']:.2f} |"
        )

    derived: dict = {}
    notes = []
    for ts, peer in (("ts-full", "hf-trainer-bf16"), ("ts-full", "hf-trainer"), ("ts-full-fp32", "hf-trainer")):
        if ok(ts) and ok(peer):
            a, b = rows[ts], rows[peer]
            v = a["samples_per_second"] / b["samples_per_second"]
            derived[f"{ts}_vs_{peer}_samples_per_s"] = v
            notes.append(
                f"- {LABELS[ts]} ({a['precision']}) ÷ {LABELS[peer]} ({b['precision']}) train images/s: "
                f"**{v:.2f}x**; held-out accuracy {a['accuracy']:.3f} vs {b['accuracy']:.3f}"
            )
    if ok("ts-full") and ok("ts-head-only"):
        full, head = rows["ts-full"], rows["ts-head-only"]
        fe, he = full["train_seconds"] / full["epochs"], head["train_seconds"] / head["epochs"]
        derived.update(
            full_seconds_per_epoch=fe,
            head_only_seconds_per_epoch=he,
            head_only_epoch_speedup_vs_full=fe / he,
            head_only_feature_seconds=head["feature_seconds"],
        )
        notes.append(
            f"- head-only per-epoch time {he:.4f} s vs full {fe:.1f} s: **{fe / he:,.0f}x** faster per epoch; "
            f"the feature pass (train + validation + test images, once; a rerun reads the cache) took "
            f"{head['feature_seconds']:.1f} s; features + {head['epochs']} head epochs = "
            f"{head['feature_seconds'] + head['train_seconds']:.1f} s vs {full['train_seconds']:.1f} s for "
            f"{full['epochs']} full epoch(s)"
        )
    if ok("pipe-hf") and ok("pipe-ts"):
        h, t = rows["pipe-hf"], rows["pipe-ts"]
        e = res["epochs"]
        hf_total = h["workers2_seconds_per_epoch"] * e
        ts_total = t["read_check_seconds"] + t["preprocess_seconds"] + t["seconds_per_epoch"] * e
        derived.update(pipeline_seconds_hf=hf_total, pipeline_seconds_ts=ts_total)
        notes.append(
            f"- data pipeline for {e} epoch(s) of {h['samples']} images: HF {hf_total:.1f} s (in 2 worker "
            f"processes, overlapping the model), tunesmith {ts_total:.1f} s (once + per epoch, in the "
            "training process)"
        )
    md = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    md += failures_md(rows)
    md += (
        "\nNotes: every row trains EfficientNet-Lite0's weights from the same ImageNet checkpoint with the same "
        f"dropout {DROPOUT} + linear head, batch {BATCH}, on the same training images. HF: one lr ({LR:g}) for "
        "all weights, no warmup, no weight decay (Trainer defaults), no validation; augmentation random resized "
        f"crop (scale {CROP_SCALE[0]}-1) + flip. tunesmith: its defaults (head lr 10x, warmup 6%, weight decay "
        "0.01, crop scale 0.6 + flip + colour jitter 0.1, keeps the best epoch on the validation images). "
        "HF's 2 DataLoader workers share the 2 cores with the 2 torch threads. other load: cores the rest of the "
        "machine kept busy while the configuration ran (other people's jobs).\n"
    )
    md += contention_md(rows)
    return md, derived


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=100, help="training images per class")
    ap.add_argument("--validation", type=int, default=10, help="validation images per class (tunesmith's model choice)")
    ap.add_argument("--test", type=int, default=50, help="held-out test images per class")
    ap.add_argument("--epochs", type=int, default=1, help="epochs of the full fine-tuning rows (HF and tunesmith)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="8 / 2 / 4 images per class smoke check")
    add_common_args(ap, DEFAULT_CONFIGS, ALL_CONFIGS, max_wait=120)
    add_child_args(ap, ALL_CONFIGS)
    args = ap.parse_args(argv)
    if args.one:
        return run_child(args)

    if args.quick:
        args.train, args.validation, args.test = 8, 2, 4
    configs = parse_configs(ap, args.configs, ALL_CONFIGS)

    root = Path(tempfile.mkdtemp(prefix="bench_vision_"))
    print(f"work folder: {root}", flush=True)
    data = prepare_data(root, args)
    work, cache, logs = root / "work", root / "tunesmith_cache", root / "logs"  # empty cache: features computed
    logs.mkdir(parents=True)
    work.mkdir()
    rows: dict[str, dict] = {}
    for c in configs:
        r = spawn(__file__, c, args, data, work, cache, logs)
        rows[c] = r
        if "error" in r:
            print(f"{c}: FAILED ({r['error']})\n{r['log_tail']}", flush=True)
        else:
            print(
                f"{c}: {r['samples_per_second']:.1f} images/s, acc {r.get('accuracy')}, wall {r['wall_seconds']:.1f}s, "
                f"RSS {r['peak_rss_mb']:.0f} MB, other load {r['other_load_cores']:.2f} cores",
                flush=True,
            )

    res = {
        "n_train": args.train * 10,
        "n_val": args.validation * 10,
        "n_test": args.test * 10,
        "per_class": {"train": args.train, "validation": args.validation, "test": args.test},
        "epochs": args.epochs,
        "threads": args.threads,
        "batch_size": BATCH,
        "lr": LR,
        "seed": SEED,
        "configs": rows,
        "env": env_versions(),
    }
    return finish("vision_vs_hf_trainer", args, res, build_report, argv, root)


if __name__ == "__main__":
    sys.exit(main())
