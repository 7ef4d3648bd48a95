"""Which numeric precision to train and infer in.

bf16 autocast pays only where the hardware computes bf16 faster than fp32. A CPU flag is not
proof: we measured a Xeon that reports avx512_bf16 yet runs bf16 matmuls at 0.5x fp32 (no AMX
exposed), while a Zen 4 runs them at 2.1x. So 'auto' times one transformer-sized matmul in both
precisions on this machine (about 0.3 s, once, cached on disk per CPU, torch version and thread
count) and picks bf16 only when it is clearly faster.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time

import torch

BF16_MIN_SPEEDUP = 1.3


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _time_linear(dtype: torch.dtype) -> float:
    x = torch.randn(1024, 384).to(dtype)
    w = torch.randn(1536, 384).to(dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(4):
            torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return best


@functools.cache
def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time for a [1024x384]x[384x1536] matmul on this CPU (cached on disk)."""
    from .strategies.feature_cache import cache_dir

    key = f"{_cpu_name()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    path = cache_dir() / "hardware.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = _time_linear(torch.float32) / _time_linear(torch.bfloat16)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(known, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs re-measuring next time
    return float(known[key])


def resolve_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_bf16_speedup() >= BF16_MIN_SPEEDUP else "fp32"


def accelerate_mixed_precision(precision: str) -> str:
    return {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
