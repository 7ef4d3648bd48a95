"""report.html: one self-contained page a person opens to judge a finished run.

Everything (plots included, as base64 PNG) lives in one file so the report can be mailed or
attached to a ticket without the run folder. Texts, labels and warnings are user data, so every
string is passed through html.escape before it reaches the page.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from ..config import RunConfig
from .card_helpers import fmt

WORST_SHOWN = 20
_ANNOTATE_MAX = 30  # above this many labels, cell numbers become unreadable noise
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.text{max-width:600px;white-space:pre-wrap;word-break:break-word}
img{max-width:100%} .warn{color:#8a4b00} .muted{color:#777}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


_num = fmt  # one formatter for the report and the card


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


def _curves_png(
    history: list[dict[str, Any]], metric_keys: tuple[str, ...], names: dict[str, str], bounded: bool
) -> str:
    """Losses (training and validation) on the left, the task's validation metrics on the right;
    `bounded`: every metric lies in [0, 1] (accuracy, F1), so the axis shows all of that range."""
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list, list]:
        pts = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    # Markers on every point so a one-evaluation run still shows something, not an empty axis.
    for ax, keys in (
        (left, [("train_loss", "train loss"), ("loss", "validation loss")]),
        (right, [(k, f"validation {names.get(k, k)}") for k in metric_keys]),
    ):
        for key, name in keys:
            xs, ys = series(key)
            if xs:
                ax.plot(xs, ys, marker="o", label=name)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    left.set_title("loss")
    right.set_title("validation metrics")
    if bounded:
        right.set_ylim(-0.02, 1.02)  # error rates (WER) can pass 1: insertions; those axes stay free
    return _png(fig)


def _table(header: list[str] | None, rows: list[list[str]]) -> str:
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _fitted(cfg: RunConfig, solver: dict[str, Any] | None) -> tuple[str, str]:
    """How the weights were fitted: a head solved to convergence has no epochs or learning rate."""
    if solver:
        rows = solver.get("rows", "training")
        folds = f", {solver['folds']}-fold CV on the {rows} rows it fits" if solver.get("folds") else ""
        return ("head solved (L-BFGS)", f"C {solver['C']:.4g}{folds}; {solver['iterations']} iterations")
    return ("epochs / lr / batch size", f"{cfg.train.epochs} / {cfg.train.lr} / {cfg.train.batch_size}")


def _summary(cfg: RunConfig, metrics: dict[str, Any]) -> str:
    run, params, train = metrics.get("run", {}), metrics.get("params", {}), metrics.get("train", {})
    rows = [
        ("model", run.get("model", cfg.model.name)),
        ("pooling", run.get("pooling")),
        ("task", run.get("task", cfg.task)),
        ("strategy", run.get("strategy", cfg.strategy.name)),
        ("trainable / total parameters", f"{_num(params.get('trainable'))} / {_num(params.get('total'))}"),
        ("precision", run.get("precision")),
        ("seed", run.get("seed", cfg.train.seed)),
        _fitted(cfg, train.get("head_solver")),
        ("optimizer steps", _num(train.get("steps"))),
        ("training time (s)", _num(train.get("train_seconds"), 1)),
        ("total run time (s)", _num(train.get("total_seconds"), 1)),
        ("training samples / s", _num(train.get("train_samples_per_second"), 1)),
        ("stopped early", metrics.get("stopped_early")),
        ("training data", cfg.data.train),
    ]
    if train.get("feature_seconds") is not None:
        rows.insert(-4, ("feature extraction time (s)", _num(train["feature_seconds"], 1)))
    return _table(None, [[f"<th>{_e(k)}</th>", f"<td>{_e(v)}</td>"] for k, v in rows])


def choice_rows(choice: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The candidates a strategy that chooses (auto) measured, as (header, plain-text rows): one
    table for the report and the card."""
    metric = choice.get("metric", "score")
    header = ["candidate", "settings", f"validation {metric}", "state", "epochs run", "seconds"]
    rows = []
    for c in choice.get("candidates", []):
        settings = ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in c.items() if "." in k)
        state = c["state"] + (" (winner)" if c.get("winner") else "") + (f": {c['why']}" if c.get("why") else "")
        rows.append(
            [c["strategy"], settings, fmt(c.get("value")), state, fmt(c.get("epochs_run")), fmt(c.get("seconds"), 1)]
        )
    return header, rows


def _choice_section(choice: dict[str, Any] | None) -> list[str]:
    if not choice:
        return []
    header, rows = choice_rows(choice)
    return [
        f"<h2>How the strategy was chosen ({_e(choice.get('by'))})</h2>",
        "<p>" + "<br>".join(_e(r) for r in choice.get("reasons", [])) + "</p>",
        _table(header, [[f"<td>{_e(v)}</td>" for v in row] for row in rows]),
        '<p class="muted">Candidates are scored on the validation split only; the test split is scored once, '
        "by the winner.</p>",
    ]


def write_report(out: Path, cfg: RunConfig, metrics: dict, examples: dict, evals: dict, task) -> Path:
    """Write out/report.html atomically, so a crashed run never leaves a report that looks whole.
    The task supplies its results and detail sections; the run summary, training curves and the
    skipped inputs and warnings are the same for every task."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot's first import
    out = Path(out)
    results, details = task.report_sections(metrics, examples, evals)
    parts = [
        f"<h1>tunesmith run: {_e(out.name)}</h1>",
        "<h2>Run</h2>",
        _summary(cfg, metrics),
        "<h2>Results</h2>",
        *results,
        "<h2>Training curves</h2>",
    ]
    history = metrics.get("history") or []
    keys = tuple(k for k in task.metrics_tracked if k != "loss")
    if len(history) > 1:
        parts.append(_curves_png(history, keys, task.display_names, not set(keys) & set(task.lower_is_better)))
    elif history:  # a solved head evaluates once: a curve of one point shows nothing a sentence cannot
        one = history[0]
        said = ", ".join(
            f"{'validation loss' if k == 'loss' else 'validation ' + task.display_names.get(k, k)} {_num(one[k])}"
            for k in ("loss", *keys)
            if one.get(k) is not None
        )
        at = _e(one.get("step"))
        parts.append(f'<p class="muted">One evaluation, at step {at}: {_e(said)}; no curve to draw.</p>')
    else:
        parts.append('<p class="muted">No evaluations were recorded.</p>')
    best = metrics.get("best_evaluation")
    if best:
        parts.append(f"<p>Kept weights from step {_e(best.get('step'))} (epoch {_e(best.get('epoch'))}).</p>")
    if metrics.get("fit"):
        parts.append(f'<p class="fit"><b>Fit:</b> {_e(metrics["fit"])}</p>')
    parts += _choice_section(metrics.get("run", {}).get("choice"))
    parts += details
    return _write_page(out, parts, metrics)


def _write_page(out: Path, parts: list[str], metrics: dict) -> Path:
    skipped = metrics.get("skipped_inputs") or []
    if skipped:
        parts += [
            f"<h2>Skipped inputs ({len(skipped)})</h2>",
            _table(["input", "why"], [[f"<td>{_e(x['input'])}</td>", f"<td>{_e(x['reason'])}</td>"] for x in skipped]),
        ]
    warnings = metrics.get("warnings") or []
    parts.append("<h2>Warnings</h2>")
    parts.append(
        "<ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in warnings) + "</ul>"
        if warnings
        else '<p class="muted">None.</p>'
    )
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>tunesmith report: {_e(out.name)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    path = out / "report.html"
    tmp = out / f".report.html.tmp{os.getpid()}"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
