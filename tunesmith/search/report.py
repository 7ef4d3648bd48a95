"""out/report.html for a study: optimisation history, parameter importances, the trial table and
the best config, in one self-contained page (the run report's page helpers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..evaluation.card_helpers import fmt
from ..evaluation.report import _e, _png, _table, _write_page


def _history_png(summary: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = sorted((r for r in summary["trials"] if r["value"] is not None), key=lambda r: r["number"])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    if done:
        xs, ys = [r["number"] for r in done], [r["value"] for r in done]
        ax.scatter(xs, ys, label="finished trial", s=18)
        better = min if summary["direction"] == "minimize" else max
        best, run = [], None
        for y in ys:
            run = y if run is None else better(run, y)
            best.append(run)
        ax.step(xs, best, where="post", color="C1", label="best so far")
        ax.legend()
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {summary['metric']}")
    ax.grid(alpha=0.3)
    return _png(fig)


def _importances(study) -> list[str]:
    import warnings

    import optuna

    evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # Optuna's default, named in the table
    try:
        with warnings.catch_warnings(record=True) as said:  # a degenerate study: said below, not on stderr
            warnings.simplefilter("always")
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as e:  # fewer than two finished trials, or one parameter value only
        return [f'<p class="muted">Parameter importances need more finished trials ({_e(e)}).</p>']
    if not imp:
        return ['<p class="muted">No parameter varied among the finished trials.</p>']
    notes = [f'<p class="muted">{_e(w.message)}</p>' for w in said if issubclass(w.category, UserWarning)]
    return [
        _table(
            ["parameter", "importance (PED-ANOVA)"],
            [[f"<td>{_e(k)}</td>", f'<td class="num">{v:.3f}</td>'] for k, v in imp.items()],
        ),
        *notes,
    ]


def write_search_report(out: Path, study, summary: dict[str, Any]) -> Path:
    best = summary.get("best")
    parts = [
        f"<h1>tunesmith search: {_e(summary['study'])}</h1>",
        f"<p>{len(summary['trials'])} trials, selected on validation {_e(summary['metric'])} "
        f"({_e(summary['direction'])}); {fmt(summary['seconds'], 1)} s in this session.</p>",
    ]
    if best:
        parts.append(
            f"<p>Best: trial {best['number']}, validation {_e(summary['metric'])} {fmt(best['value'])}, "
            f"{_e(json.dumps(best['params']))}. <code>best.yaml</code> reproduces it.</p>"
        )
    if summary.get("test"):
        parts.append(
            "<p>Test split, scored once, by the best trial's model only (no trial saw it): "
            + ", ".join(f"{_e(k)} {fmt(v)}" for k, v in summary["test"].items() if k != "loss")
            + "</p>"
        )
    parts += ["<h2>Optimisation history</h2>", _history_png(summary), "<h2>Parameter importances</h2>"]
    parts += _importances(study)
    rows = []
    for r in summary["trials"]:
        rows.append(
            [
                f'<td class="num">{r["number"]}</td>',
                f"<td>{_e(r['state'])}</td>",
                f'<td class="num">{fmt(r["value"])}</td>',
                f"<td>{_e(json.dumps(r['params']))}</td>",
                f'<td class="num">{fmt(r["seconds"], 1)}</td>',
                f"<td>{_e(r['pruned_at'] if r['pruned_at'] is not None else '')}</td>",
                f"<td>{_e(r['error'] or '')}</td>",
            ]
        )
    parts += [
        "<h2>Trials (best first)</h2>",
        _table(
            ["#", "state", f"validation {_e(summary['metric'])}", "parameters", "seconds", "pruned at epoch", "error"],
            rows,
        ),
        "<h2>Space</h2>",
        f"<pre>{_e(json.dumps(summary['space'], indent=2))}</pre>",
    ]
    best_yaml = Path(out) / "best.yaml"
    if best_yaml.is_file():
        parts += ["<h2>Best config (best.yaml)</h2>", f"<pre>{_e(best_yaml.read_text(encoding='utf-8'))}</pre>"]
    return _write_page(Path(out), parts, {})
