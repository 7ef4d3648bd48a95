"""README.md model card: what someone who finds the folder needs to trust it and load it.

The skeleton (base model, data, training procedure, how to load, limitations) is the same for every
run; the task fills in its description, results and limitations (evaluation/*_report.py), and the
run format says how the folder loads. The card is honest about the format: a layout transformers
cannot open says so and names the nearest standard one, rather than letting a user discover it by
a stack trace, and rather than tunesmith quietly switching pooling to fit a format.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..config import RunConfig
from ..formats import format_of, read_meta
from ..modalities import MODALITIES
from .card_helpers import cell, fmt


def _choice_table(choice: dict | None) -> list[str]:
    """The candidates a strategy that chooses measured, as a Markdown table (validation scores only)."""
    if not choice:
        return []
    from .report import choice_rows

    header, rows = choice_rows(choice)
    return [
        "",
        "  Candidates raced (validation split only; the test split was scored once, by the winner):",
        "",
        "  | " + " | ".join(header) + " |",
        "  |" + "---|" * len(header),
        *("  | " + " | ".join(cell(v) for v in row) + " |" for row in rows),
        "",
    ]


def write_model_card(out: Path, cfg: RunConfig, metrics: dict, task) -> Path:
    """Write out/README.md atomically, so a crashed run never leaves a card that looks complete."""
    out = Path(out)
    meta = read_meta(out)
    fmt_ = format_of(meta)
    parts = task.card_sections(out, cfg, metrics)
    run, params, train = metrics.get("run", {}), metrics.get("params", {}), metrics.get("train", {})
    strategy = run.get("strategy", cfg.strategy.name)
    front = {
        "library_name": "transformers" if fmt_.pipeline_loads else "tunesmith",
        "pipeline_tag": task.pipeline_task,
        "base_model": cfg.model.name,
        "tags": ["tunesmith", cfg.task, f"strategy-{strategy}", *parts.tags],
        **parts.front,
    }
    d, t = cfg.data, cfg.train
    example = MODALITIES.get(task.modality).example_input
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {out.name}",
        "",
        parts.title,
        "",
        "## Model description",
        "",
        f"- Base model: `{cfg.model.name}`",
        *parts.description,
        "",
        "## Training data",
        "",
        f"- Training file: `{d.train}`",
        f"- Validation: `{d.validation}`"
        if d.validation
        else f"- Validation: a {d.validation_split:g} split held out of the training file (seed {d.split_seed})",
        f"- Test file: `{d.test}`" if d.test else "- Test file: none",
        *parts.data,
        f"- Training examples processed (all epochs): {fmt(train.get('samples'))}",
        "",
        "## Training procedure",
        "",
        f"- Strategy: `{strategy}`"
        + (f", chosen by `{run['choice']['by']}`: {'; '.join(run['choice']['reasons'])}" if run.get("choice") else ""),
        *_choice_table(run.get("choice")),
        f"- Trainable parameters: {fmt(params.get('trainable'))} of {fmt(params.get('total'))} total"
        + (
            f" (started at {fmt(params['trainable_at_start'])}: gradual unfreezing)"
            if params.get("trainable_at_start") not in (None, params.get("trainable"))
            else ""
        )
        + ("; LoRA adapters merged into the saved weights" if meta.get("lora_merged") else ""),
        _training_line(t, train.get("head_solver")),
        f"- Precision: {run.get('precision', t.precision)}; seed: {run.get('seed', t.seed)}",
        f"- Optimizer steps: {fmt(train.get('steps'))}; "
        f"stopped early: {'yes' if metrics.get('stopped_early') else 'no'}"
        f"; best model picked by validation `{t.metric}`",
        *([f"- Fit: {metrics['fit']}"] if metrics.get("fit") else []),
        *parts.procedure,
        "",
        "## Evaluation results",
        "",
        *parts.results,
        "",
        "## How to load",
        "",
        *fmt_.how_to_load(out.name, meta, task, example),
        *parts.loading_note,
        "## Limitations",
        "",
        *parts.limitations,
    ]
    warnings = metrics.get("warnings") or []
    if warnings:
        # data checks and results alike (a model no better than the trivial predictor says so here)
        lines += ["- Warnings raised by this run:"] + [f"  - {cell(w)}" for w in warnings]
    path = out / "README.md"
    tmp = out / f".README.md.tmp{os.getpid()}"
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _training_line(t, solver: dict | None) -> str:
    """How the weights were fitted: a head solved to convergence has no epochs or learning rate."""
    if solver:
        how = f"C {solver['C']:.4g}" + (
            f", chosen by {solver['folds']}-fold cross-validation on the {solver.get('rows', 'training')} rows it fits"
            if solver.get("folds")
            else ""
        )
        return f"- Head solved to convergence (L-BFGS, {solver['iterations']} iterations; {how})"
    return f"- Epochs: {t.epochs}; learning rate: {t.lr}; batch size: {t.batch_size}" + (
        f" x {t.grad_accum} accumulated" if t.grad_accum > 1 else ""
    )
