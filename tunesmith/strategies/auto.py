"""`--strategy auto`: pick a strategy from evidence, not folklore.

The rule is the table our strategy study wrote (bench/strategy_study.py -> auto_table.json,
explained in docs/strategy-choice.md): the winner at the largest studied size that your smallest
class reaches. Then memory: full-weight strategies need about 16 bytes per parameter (weights,
gradients, two AdamW moments) plus activations; if that would not fit in the memory available,
auto steps down to lora, then head-only. The choice and the reasons are printed and recorded.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from torch import nn

from . import STRATEGIES
from .base import Choice, ChoiceContext, ParamCounts, StrategyDefaults, require_pooled_features

TABLE = Path(__file__).with_name("auto_table.json")
# Optimizer-state bytes per parameter of the whole model for each strategy (fp32 AdamW: weights,
# grads, 2 moments = 16 for full; frozen weights alone = 4), before activations.
BYTES_PER_PARAM = {"full": 16, "partial": 8, "gradual": 16, "bitfit": 4.5, "lora": 4.5, "head-only": 4}
MEMORY_HEADROOM = 0.6  # use at most this share of the memory available
ACTIVATION_BYTES = 2 << 30  # rough allowance for activations at batch 32


def available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def param_count(model_dir: Path) -> int:
    """Parameters in a model folder, read from safetensors headers without loading weights."""
    from safetensors import safe_open

    total = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def choose(labels: list[str], model_params: int, memory: int | None, modality: str = "text") -> Choice:
    """The study's pick for this many labelled examples (and memory); `modality` other than text says
    that the study behind it is a text one (no image or audio study exists yet)."""
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    counts = Counter(labels)
    smallest_label, smallest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    rows = sorted((r for r in table["rules"] if r["per_class"] is not None), key=lambda r: r["per_class"])
    all_row = next((r for r in table["rules"] if r["per_class"] is None), None)
    row = rows[0]
    for r in rows:
        if smallest >= r["per_class"]:
            row = r
    if all_row is not None and len(labels) >= all_row["n_train"]:
        row = all_row
    where = "all studied examples" if row["per_class"] is None else f"{row['per_class']} per class"
    reasons = [
        f"smallest class {smallest_label!r} has {smallest} labelled examples ({len(labels)} in all)",
        f"in our study ({table['source']}) {row['strategy']} was the pick at {where}: {row['why']}, "
        f"test accuracy {row['accuracy_mean']:.3f} ± {row['accuracy_std']:.3f}",
    ]
    if modality != "text":
        reasons.append(
            f"that study is of text classification (MiniLM on tweets); for {modality} it is a guess "
            "until a study of its own exists: compare with --strategy head-only / partial / full"
        )
    strategy = row["strategy"]
    if memory is not None:
        for fallback in ("lora", "head-only"):
            need = model_params * BYTES_PER_PARAM[strategy] + ACTIVATION_BYTES
            if need <= memory * MEMORY_HEADROOM:
                break
            reasons.append(
                f"{strategy} needs ~{need / 2**30:.1f} GiB for a {model_params / 1e6:.0f}M-parameter "
                f"model, more than {MEMORY_HEADROOM:.0%} of the {memory / 2**30:.1f} GiB available: "
                f"stepping down to {fallback}"
            )
            strategy = fallback
    return Choice(strategy, reasons, asked="auto")


@STRATEGIES.register("auto")
class AutoStrategy(StrategyDefaults):
    """Not a way of training but a choice of one: `pick` names the strategy the run trains with, and
    the choice and its reasons are printed and recorded. It accepts every strategy's options (they
    apply if it picks that strategy)."""

    name = "auto"
    defaults: dict[str, float] = {}  # never trains itself
    options: tuple[str, ...] = ()  # filled in by strategies/__init__ once every strategy is registered
    supports_layer_decay = True

    @classmethod
    def check_task(cls, task_cls) -> None:
        require_pooled_features(cls.name, task_cls, "its evidence is a study of classifiers on pooled features")

    @classmethod
    def pick(cls, context: ChoiceContext) -> Choice:
        return choose(context.labels, param_count(context.model_dir), available_memory(), context.modality)

    def prepare(self, model: nn.Module) -> ParamCounts:
        raise RuntimeError("strategy auto trains nothing itself: call AutoStrategy.pick and use the strategy it names")

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        raise RuntimeError("strategy auto trains nothing itself")
