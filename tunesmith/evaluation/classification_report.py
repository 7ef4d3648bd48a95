"""The classification parts of report.html and README.md: accuracy / macro-F1 per split, confusion
matrices, per-class scores, the worst-classified examples (and, for images, the misclassified images)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .card_helpers import cell, fmt, with_ci
from .report import _ANNOTATE_MAX, WORST_SHOWN, _e, _num, _png, _table


def _confusion_png(cm: dict[str, Any], title: str) -> str:
    import matplotlib.pyplot as plt

    names, matrix = cm["labels"], np.asarray(cm["matrix"])
    n = len(names)
    side = min(max(4.0, 0.45 * n + 2.5), 16.0)  # grows with the label set, but never into a poster
    font = max(4, min(10, int(220 / max(n, 1))))
    fig, ax = plt.subplots(figsize=(side, side))
    high = int(matrix.max()) if matrix.size else 0
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(high, 1))  # fixed scale: all-equal counts stay readable
    ax.set_xticks(range(n), [str(x) for x in names], rotation=90 if n > 6 else 0, fontsize=font)
    ax.set_yticks(range(n), [str(x) for x in names], fontsize=font)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title)
    if n <= _ANNOTATE_MAX:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(int(matrix[i, j])),
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if matrix[i, j] > high / 2 else "black",
                )
    return _png(fig)


def _headline(metrics: dict[str, Any]) -> str:
    rows = []
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m:
            rows.append(
                [f"<td>{split}</td>"]
                + [f'<td class="num">{_e(with_ci(m, k))}</td>' for k in ("accuracy", "macro_f1")]
                + [f'<td class="num">{_e(_num(m.get(k)))}</td>' for k in ("loss", "n")]
            )
    return _table(["split", "accuracy [95% CI]", "macro-F1 [95% CI]", "loss", "examples"], rows)


def _per_class(m: dict[str, Any]) -> str:
    keys = ("precision", "recall", "f1", "support")
    rows = [
        [f"<td>{_e(label)}</td>"] + [f'<td class="num">{_e(_num(v.get(k)))}</td>' for k in keys]
        for label, v in m.get("per_class", {}).items()
    ]
    return _table(["label", "precision", "recall", "F1", "support"], rows)


def _worst(ex, ev, labels: list[str]) -> str:
    """The examples the model got most wrong: often mislabelled rows or a missing class of input."""
    probs = np.asarray(ev.probabilities)
    label_id = {y: i for i, y in enumerate(labels)}
    known = np.array([i for i, y in enumerate(ex.labels) if y in label_id], dtype=int)
    p_true = np.zeros(len(ex.labels))
    p_true[known] = probs[known, [label_id[ex.labels[i]] for i in known]]
    order = known[np.argsort(p_true[known], kind="stable")][:WORST_SHOWN]
    rows = []
    for i in order:
        pred = int(ev.predictions[i])
        rows.append(
            [
                f'<td class="num">{i + 1}</td>',
                f'<td class="text">{_e(ex.display(i))}</td>',
                f"<td>{_e(ex.labels[i])}</td>",
                f"<td>{_e(labels[pred])}</td>",
                f'<td class="num">{probs[i, pred]:.3f}</td>',
                f'<td class="num">{p_true[i]:.3f}</td>',
            ]
        )
    return _table(["#", ex.display_column, "true label", "predicted", "confidence", "p(true label)"], rows)


def misclassified_grid(ex, ev, labels: list[str], limit: int = 16) -> str:
    """Wrongly classified validation images, most confident mistakes first, with true / predicted
    label and confidence: mislabelled scans and confusable classes show up here at a glance."""
    import matplotlib.pyplot as plt

    from ..data.images import load_image

    probs = np.asarray(ev.probabilities)
    wrong = [i for i, y in enumerate(ex.labels) if labels[int(ev.predictions[i])] != y]
    if not wrong:
        return '<p class="muted">No validation image was misclassified.</p>'
    wrong.sort(key=lambda i: -probs[i, int(ev.predictions[i])])
    shown = wrong[:limit]
    cols = min(4, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, shown):
        img = load_image(ex.items[i], ex.names[i])
        img.thumbnail((160, 160))
        ax.imshow(img)
        pred = int(ev.predictions[i])
        ax.set_title(f"true: {ex.labels[i][:18]}\npred: {labels[pred][:18]} ({probs[i, pred]:.2f})", fontsize=8)
    fig.tight_layout()
    return (
        f"<p>{len(wrong)} of {len(ex.labels)} validation images misclassified"
        + (f"; the {len(shown)} most confident mistakes" if len(wrong) > len(shown) else "")
        + ":</p>"
        + _png(fig)
    )


def _calibration_section(metrics: dict, examples: dict, evals: dict) -> list[str]:
    """ECE and the reliability diagram on validation; what eval.calibrate fitted, or how to turn it on."""
    from ..evaluation.calibration import reliability_png, softmax

    ev, ex = evals.get("validation"), examples.get("validation")
    val = metrics.get("validation") or {}
    if ev is None or ev.logits is None or val.get("ece") is None or ex is None:
        return []
    refs = [int(r) for r in _label_ids(ex, metrics)]
    probs = softmax(np.asarray(ev.logits, dtype=np.float64))
    cal = metrics.get("calibration")
    said = (
        f"Calibrated (eval.calibrate): temperature {cal['temperature']:.3f} fitted on {cal['fitted_on']}, ECE "
        f"{cal['ece_before']:.4f} before, {cal['ece_after']:.4f} after (measured on the rows it was fitted on); "
        "the saved head includes it."
        if cal
        else f"Expected calibration error {val['ece']:.4f}. `--set eval.calibrate=true` fits a temperature on "
        "validation and folds it into the head (the labels stay the same; the scores mean what they say)."
    )
    return ["<h2>Calibration (validation)</h2>", f"<p>{_e(said)}</p>", reliability_png(probs, np.asarray(refs), _png)]


def _label_ids(ex, metrics: dict) -> list[int]:
    labels = (metrics.get("validation") or {}).get("confusion_matrix", {}).get("labels") or []
    index = {label: i for i, label in enumerate(labels)}
    return [index[y] for y in ex.labels]


def report_sections(
    metrics: dict, examples: dict, evals: dict, labels: list[str], gallery: Callable
) -> tuple[list[str], list[str]]:
    """(results: scores and confusion matrices; details: per-class scores, the validation examples the
    model got most wrong). `gallery(examples, eval)`: sections that show validation inputs themselves."""
    results = [_headline(metrics)]
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m and m.get("confusion_matrix"):
            results += [f"<h3>Confusion matrix ({split})</h3>", _confusion_png(m["confusion_matrix"], split)]
    details = _calibration_section(metrics, examples, evals)
    for split in ("validation", "test"):
        if metrics.get(split):
            details += [f"<h2>Per-class results ({split})</h2>", _per_class(metrics[split])]
    ex, ev = examples.get("validation"), evals.get("validation")
    if ex is not None and ev is not None and ex.labels:
        details += gallery(ex, ev)
        details += [
            f"<h2>Worst-classified validation examples (lowest probability of the true label, "
            f"up to {WORST_SHOWN})</h2>",
            _worst(ex, ev, labels),
        ]
    return results, details


# -- README.md --------------------------------------------------------------------------------------
def _results_md(metrics: dict[str, Any]) -> list[str]:
    lines = [
        "| split | examples | accuracy [95% CI] | macro-F1 [95% CI] | loss | ECE |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m:
            lines.append(
                f"| {split} | {fmt(m.get('n'))} | {with_ci(m, 'accuracy')} | "
                f"{with_ci(m, 'macro_f1')} | {fmt(m.get('loss'))} | {fmt(m.get('ece'))} |"
            )
    cal = metrics.get("calibration")
    if cal:
        lines += [
            "",
            f"Scores calibrated by temperature scaling (T = {cal['temperature']:.3f}, fitted on {cal['fitted_on']}; "
            f"ECE there {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}), folded into the saved head.",
        ]
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m and m.get("per_class"):
            lines += [
                "",
                f"Per class ({split}):",
                "",
                "| label | precision | recall | F1 | support |",
                "|---|---:|---:|---:|---:|",
            ]
            lines += [
                f"| {cell(label)} | {fmt(v.get('precision'))} | {fmt(v.get('recall'))} | "
                f"{fmt(v.get('f1'))} | {fmt(v.get('support'))} |"
                for label, v in m["per_class"].items()
            ]
    return lines


def card_sections(task, out: Path, cfg, metrics: dict):
    from ..tasks.base import CardSections

    run = metrics.get("run", {})
    pooling = run.get("pooling") or cfg.model.pooling or "unknown"
    val, test = metrics.get("validation") or {}, metrics.get("test")
    labels = task.labels
    return CardSections(
        title=f"A {task.name} model fine-tuned with tunesmith.",
        description=[
            f"- Pooling: `{pooling}`",
            f"- Task: {task.name}",
            f"- Labels ({len(labels)}): " + ", ".join(f"`{cell(x)}`" for x in labels),
        ],
        data=[
            f"- Validation examples: {fmt(val.get('n'))}" + (f"; test examples: {fmt(test.get('n'))}" if test else "")
        ],
        procedure=[],
        results=_results_md(metrics),
        loading_note=[],
        limitations=[
            "- The scores above were measured on the validation and test data named here; they say little "
            "about inputs unlike it (other domains, sources, conditions or label distributions).",
            "- The model only ever predicts one of the labels listed above.",
            *task.limitations(out, cfg),
        ],
        tags=[f"pooling-{pooling}"],
    )
