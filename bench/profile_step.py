"""Where one full fine-tuning step goes: torch.profiler, self CPU time grouped by op kind (issue 17).

The model, data rows, optimizer, scheduler and accelerator are built by tunesmith's own API pieces
(read_data, choose_strategy, build_model, encode_rows, build_optimizer, accelerator.prepare), and one
step is the sequence `fit` runs: collate -> to device -> compute_loss (autocast via accelerate's
wrapped forward) -> accelerator.backward -> clip_grad_norm_ -> optimizer.step -> scheduler.step ->
zero_grad. Warm-up steps, then --steps steps timed without the profiler (step ms, samples/s), then the
same steps again under the profiler (self CPU time per op, per kind).

An op's kind: every op under the "data", "clip" or "optimizer" phase belongs to that phase; elsewhere
the op's own name decides (KINDS), else its nearest named ancestor's (aten::dropout's aten::mul is
dropout), else "other". "host" is the phases' own self time: Python and framework work between ops.

    python bench/profile_step.py [--models text image] [--precisions fp32 bf16] [--steps 5] [--batch-size 32]

Results: stdout and bench/results/profile_step.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tunesmith.api import build_model, choose_strategy, encode_rows, read_data  # noqa: E402
from tunesmith.config import config_from_dict  # noqa: E402
from tunesmith.data.batching import row_lengths, train_batches  # noqa: E402
from tunesmith.models import resolve_model  # noqa: E402
from tunesmith.progress import Reporter  # noqa: E402
from tunesmith.training.dropout import use_cheap_dropout  # noqa: E402
from tunesmith.training.optim import build_optimizer, warmup_linear_decay  # noqa: E402

DATA = Path("/tmp/qb/data")
MODELS = {"text": ("text-classification", "minilm"), "image": ("image-classification", "efficientnet-lite0")}
WARMUP = 3
MATMUL = "matmul"
# (kind, pattern on the op name, autograd nodes without "autograd::engine::evaluate_function: "); first wins
KINDS = [
    ("casts", r"aten::(to|_to_copy|_autocast_to_\w+)$|ToCopyBackward"),
    ("attention", r"scaled_dot_product|_flash_attention|_efficient_attention|aten::_?softmax|Softmax|Sdpa|Attention"),
    ("loss", r"cross_entropy|nll_loss|log_softmax|NllLoss|LogSoftmax"),
    (
        MATMUL,
        r"aten::(mm|addmm|bmm|baddbmm|matmul|linear|_?convolution|conv\dd|mkldnn_\w+|_mkldnn\w*|convolution_backward"
        r"|_nnpack\w*|thnn_conv\w*)$|^(Mm|Addmm|Bmm|Baddbmm|Convolution|MkldnnConvolution|MkldnnLinear)Backward\d",
    ),
    ("norm", r"layer_norm|batch_norm|LayerNorm|BatchNorm|group_norm"),
    ("activation", r"gelu|relu|hardtanh|silu|sigmoid|tanh|Gelu|Relu|Hardtanh|Silu|Sigmoid|Tanh"),
    ("dropout", r"dropout|bernoulli|Dropout|aten::random_"),
    ("optimizer", r"adam|Adam"),
]
# every op under these phases is theirs; "host_sync": fit's per-step loss.item() and token count
PHASE_KINDS = {"data": "data", "clip": "clip", "optimizer": "optimizer", "scheduler": "optimizer"}
PHASE_KINDS |= {"zero_grad": "optimizer", "host_sync": "host"}
ORDER = "matmul attention norm activation dropout casts loss data clip optimizer host other".split()


def config(kind: str, precision: str, batch: int, out: Path, data: Path) -> dict:
    task, model = MODELS[kind]
    split = {"train": str(data / "train.csv")} if kind == "text" else {"train": str(data / "train")}
    if kind == "image" and (data / "val").is_dir():
        split["validation"] = str(data / "val")
    return {
        "task": task,
        "out": str(out),
        "model": {"name": model},
        "strategy": {"name": "full"},
        "data": split,
        "train": {"batch_size": batch, "precision": precision, "seed": 42, "early_stopping_patience": None},
    }


def data_folder(kind: str, tmp: Path) -> Path:
    real = DATA / ("rotten-tomatoes" if kind == "text" else "mnist-5k")
    if (real / ("train.csv" if kind == "text" else "train")).exists():
        return real
    from tunesmith.testing import make_image_folder, sentiment_rows, write_csv

    if kind == "text":
        write_csv(tmp / "train.csv", sentiment_rows(2000))
    else:
        make_image_folder(tmp / "train", 60, size=(224, 224))
    return tmp


def setup(kind: str, precision: str, batch: int, need: int, tmp: Path, torch_dropout: bool = False):
    """(Built, training rows, the batches `fit` would draw in epoch 0, optimizer, scheduler, prepared model).
    As in fit, nn.Dropout modules become CheapDropout (training/dropout.py) unless `torch_dropout`."""
    reporter = Reporter(quiet=True)
    data_dir = data_folder(kind, tmp)
    cfg = config_from_dict(config(kind, precision, batch, tmp / "run", data_dir))
    data = read_data(cfg, reporter)
    cfg, _ = choose_strategy(cfg, data, resolve_model(cfg.model.name), reporter, tmp / "run", False)
    b = build_model(cfg, resolve_model(cfg.model.name), data, reporter)
    if not torch_dropout:
        use_cheap_dropout(b.model)
    # encode only the rows the steps use (and a few validation rows): images are slow to decode
    g = torch.Generator().manual_seed(0)
    for split, ex in data.splits.items():
        n = min(len(ex), need * batch if split == "train" else batch)
        data.splits[split] = ex.subset(torch.randperm(len(ex), generator=g)[:n].tolist())
    _, rows = encode_rows(b, data, reporter, {})
    tc, train_rows = b.cfg.train, rows["train"]
    batches = train_batches(row_lengths(train_rows), tc.batch_size, tc.seed, 0, tc.group_size, tc.length_grouping)
    optimizer = build_optimizer(b.strategy.param_groups(b.model, tc), tc.lr, b.accelerator.device.type)
    scheduler = warmup_linear_decay(optimizer, 1000, tc.warmup_ratio)
    model, optimizer = b.accelerator.prepare(b.model, optimizer)
    model.train()
    return b, train_rows, batches, optimizer, scheduler, model


@contextlib.contextmanager
def phase(name: str, times: dict | None):
    """A record_function label for the profiler, and wall time per phase when `times` is given."""
    t0 = time.perf_counter()
    with record_function(name):
        yield
    if times is not None:
        times[name] = times.get(name, 0.0) + time.perf_counter() - t0


def step(b, model, optimizer, scheduler, rows, idx, times: dict | None = None) -> None:
    """One step of fit() (one process, grad_accum 1), in named phases."""
    acc, tc = b.accelerator, b.cfg.train
    with phase("data", times):
        batch = {k: v.to(acc.device) for k, v in b.task.collate([rows[i] for i in idx]).items()}
    with phase("forward", times):
        out = b.task.compute_loss(model, batch)
    with phase("backward", times):
        acc.backward(out["loss"])
    with phase("host_sync", times):  # fit: loss_window.append(loss.item()), task.tokens(batch)
        out["loss"].item()
        b.task.tokens(batch)
    if tc.max_grad_norm is not None:
        with phase("clip", times):
            acc.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
    with phase("optimizer", times):
        optimizer.step()
    with phase("scheduler", times):
        scheduler.step()
    with phase("zero_grad", times):
        optimizer.zero_grad(set_to_none=True)


def kind_of(name: str) -> str | None:
    name = name.removeprefix("autograd::engine::evaluate_function: ")
    return next((k for k, pattern in KINDS if re.search(pattern, name)), None)


PHASES = {"data", "forward", "backward", "host_sync", "clip", "optimizer", "scheduler", "zero_grad"}


def classify(events) -> tuple[dict[str, float], dict[str, float], int]:
    """Self CPU µs per kind; per op the step called, of the ops left in "other"; dtype conversions in casts."""
    kinds, unmapped, conversions = defaultdict(float), defaultdict(float), 0
    for ev in events:
        chain, e = [], ev
        while e is not None:
            chain.append(e.name)
            e = e.cpu_parent
        where = next((n for n in reversed(chain) if n in PHASES), None)
        if ev.name in PHASES:
            kind = "host"
        elif where in PHASE_KINDS:
            kind = PHASE_KINDS[where]
        else:
            kind = next((k for k in map(kind_of, chain) if k is not None), None)
            if kind is None:
                kind = "other"
                below = chain[: chain.index(where)] if where else chain  # the op the step called, to add to KINDS
                unmapped[below[-1]] += ev.self_cpu_time_total
        kinds[kind] += ev.self_cpu_time_total
        conversions += kind == "casts" and ev.name == "aten::_to_copy"
    return kinds, unmapped, conversions


def matmul_peak() -> dict[str, float]:
    """GFLOP/s of a 2048x2048 torch.mm, fp32 and bf16, each timed for about 0.5 s."""
    n, peak = 2048, {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, c = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(a, c)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.5:
            torch.mm(a, c)
            reps += 1
        peak[name] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9
    return peak


def run_one(kind: str, precision: str, args, peak) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        b, rows, batches, optimizer, scheduler, model = setup(
            kind, precision, args.batch_size, 16, Path(tmp), args.torch_dropout
        )
        batches = [x for x in batches if len(x) == args.batch_size][: WARMUP + args.steps]
        warm, measured = batches[:WARMUP], batches[WARMUP:]
        for idx in warm:
            step(b, model, optimizer, scheduler, rows, idx)
        times, step_times = {}, []
        for idx in measured:
            t0 = time.perf_counter()
            step(b, model, optimizer, scheduler, rows, idx, times)
            step_times.append(time.perf_counter() - t0)
        step_s = statistics.median(step_times)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
            for idx in measured:
                step(b, model, optimizer, scheduler, rows, idx)
        kinds, unmapped, conversions = classify(prof.events())
    first = b.task.collate([rows[i] for i in measured[0]])
    shape = next(v for k, v in first.items() if k != "labels").shape
    r = {
        "shape": "x".join(map(str, shape)),
        "kind": kind,
        "precision": b.precision,
        "step_ms": step_s * 1e3,
        "step_range": f"{min(step_times) * 1e3:.0f}-{max(step_times) * 1e3:.0f}",
        "conversions": conversions / len(measured),
        "samples_s": args.batch_size / step_s,
    }
    r["step_times"] = step_times
    r["phases"] = {k: v / len(measured) * 1e3 for k, v in times.items()}
    total = sum(kinds.values())
    r["kinds"] = {k: (v / len(measured) / 1e3, 100 * v / total) for k, v in kinds.items()}
    r["profiled_ms"] = total / len(measured) / 1e3
    r["unmapped"] = {k: 100 * v / total for k, v in sorted(unmapped.items(), key=lambda kv: -kv[1]) if v > total / 100}
    if kind == "text":
        r["tokens"] = sum(len(rows[i]["input_ids"]) for x in measured for i in x) / len(measured) / args.batch_size
        flops = 6 * sum(m.weight.numel() for m in b.model.modules() if isinstance(m, torch.nn.Linear))
        flops *= sum(max(len(rows[i]["input_ids"]) for i in x) * len(x) for x in measured) / len(measured)
        mm_s = r["kinds"].get(MATMUL, (0, 0))[0] / 1e3
        r["mm_gflops"] = flops / mm_s / 1e9 if mm_s else 0.0
        r["mfu"] = 100 * flops / statistics.mean(step_times) / 1e9 / peak[precision]  # mean: flops are a mean
        r["mm_util"] = 100 * r["mm_gflops"] / peak[precision]
    return r


def markdown(results, args, peak, load_before, load_after) -> str:
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    lines = [
        "# One training step, by op kind (bench/profile_step.py)",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; machine: {cpu}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads  ",
        f"Load average (1 min): {load_before:.2f} before, {load_after:.2f} after  ",
        f"Matmul peak (2048x2048 torch.mm): fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s",
        "",
        f"Full fine-tuning, batch {args.batch_size}; {WARMUP} warm-up steps; step ms: median of {args.steps} unprofiled"
        f" steps; kinds = self CPU time of the same {args.steps} steps under torch.profiler (their total, 'profiled"
        " ms', includes the profiler's own overhead). 'host': Python/framework time between ops (and fit's"
        " loss.item()); 'clip': clip_grad_norm_.",
        "",
        "## Summary",
        "",
        "| model | precision | step ms | samples/s | matmul share | top 3 non-matmul kinds | matmul GFLOP/s (% peak) "
        "| MFU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        top = sorted(((v[1], k) for k, v in r["kinds"].items() if k != MATMUL), reverse=True)[:3]
        mm, mfu = (f"{r['mm_gflops']:.0f} ({r['mm_util']:.0f}%)", f"{r['mfu']:.0f}%") if "mfu" in r else ("-", "-")
        lines.append(
            f"| {r['kind']} | {r['precision']} | {r['step_ms']:.0f} | {r['samples_s']:.1f} | "
            f"{r['kinds'].get(MATMUL, (0, 0))[1]:.0f}% | {', '.join(f'{k} {s:.0f}%' for s, k in top)} | {mm} | {mfu} |"
        )
    for r in results:
        extra = f", first batch {r['shape']}" + (f", mean {r['tokens']:.0f} tokens/row" if "tokens" in r else "")
        lines += ["", f"## {r['kind']} ({MODELS[r['kind']][1]}), {r['precision']}: profiled {r['profiled_ms']:.0f} ms"]
        lines[-1] += f"/step{extra}"
        lines += ["", "| kind | ms / step | share |", "|---|---|---|"]
        for k in sorted(r["kinds"], key=lambda k: ORDER.index(k)):
            lines.append(f"| {k} | {r['kinds'][k][0]:.1f} | {r['kinds'][k][1]:.1f}% |")
        lines += ["", "Phases, wall ms per step without the profiler: "]
        lines[-1] += ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())
        lines[-1] += (
            f" (steps {r['step_range']} ms); {r['conversions']:.0f} dtype conversions (aten::_to_copy) per step"
        )
        if r["unmapped"]:
            lines += [
                "",
                "Unmapped ops over 1% (in 'other'): " + ", ".join(f"`{k}` {v:.1f}%" for k, v in r["unmapped"].items()),
            ]
    return "\n".join(lines) + "\n"


def wait_for_quiet(limit_s: float = 900, below: float = 0.5) -> float:
    t0 = time.monotonic()
    while os.getloadavg()[0] >= below and time.monotonic() - t0 < limit_s:
        print(f"load {os.getloadavg()[0]:.2f}: waiting", flush=True)
        time.sleep(20)
    return os.getloadavg()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--torch-dropout", action="store_true", help="torch's own dropout, not fit's CheapDropout")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-wait", type=float, default=900, help="seconds to wait for a 1-minute load below 0.5")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "profile_step.md")
    args = p.parse_args()
    load_before = wait_for_quiet(args.max_wait)
    peak = matmul_peak()
    results = []
    for kind in args.models:
        for precision in args.precisions:
            with contextlib.redirect_stdout(sys.stderr):
                results.append(run_one(kind, precision, args, peak))
            print(f"{kind} {precision}: {results[-1]['step_ms']:.0f} ms/step", flush=True)
    text = markdown(results, args, peak, load_before, os.getloadavg()[0])
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
