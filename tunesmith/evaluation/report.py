"""report.html: one self-contained page a person opens to judge a finished run.

Everything (plots included, as base64 PNG) lives in one file so the report can be mailed or
attached to a ticket without the run folder. Texts, labels and warnings are user data, so every
string is passed through html.escape before it reaches the page.
"""
from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig

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


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}">'


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
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=font,
                        color="white" if matrix[i, j] > high / 2 else "black")
    return _png(fig)


_METRIC_NAMES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "wer": "WER", "cer": "CER"}


def _curves_png(history: list[dict[str, Any]], metric_keys: tuple[str, ...] = ("accuracy", "macro_f1")) -> str:
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list, list]:
        pts = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    # Markers on every point so a one-evaluation run still shows something, not an empty axis.
    for ax, keys in ((left, [("train_loss", "train loss"), ("loss", "validation loss")]),
                     (right, [(k, f"validation {_METRIC_NAMES.get(k, k)}") for k in metric_keys])):
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
    if set(metric_keys) <= {"accuracy", "macro_f1"}:
        right.set_ylim(-0.02, 1.02)  # error rates (WER) can pass 1: insertions
    return _png(fig)


def _table(header: list[str] | None, rows: list[list[str]]) -> str:
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _summary(cfg: RunConfig, metrics: dict[str, Any]) -> str:
    run, params, train = metrics.get("run", {}), metrics.get("params", {}), metrics.get("train", {})
    rows = [
        ("model", run.get("model", cfg.model.name)), ("pooling", run.get("pooling")),
        ("task", run.get("task", cfg.task)), ("strategy", run.get("strategy", cfg.strategy.name)),
        ("trainable / total parameters", f"{_num(params.get('trainable'))} / {_num(params.get('total'))}"),
        ("precision", run.get("precision")), ("seed", run.get("seed", cfg.train.seed)),
        ("epochs / lr / batch size", f"{cfg.train.epochs} / {cfg.train.lr} / {cfg.train.batch_size}"),
        ("optimizer steps", _num(train.get("steps"))),
        ("training time (s)", _num(train.get("train_seconds"), 1)),
        ("total run time (s)", _num(train.get("total_seconds"), 1)),
        ("training samples / s", _num(train.get("train_samples_per_second"), 1)),
        ("stopped early", metrics.get("stopped_early")), ("training data", cfg.data.train),
    ]
    if train.get("feature_seconds") is not None:
        rows.insert(-4, ("feature extraction time (s)", _num(train["feature_seconds"], 1)))
    return _table(None, [[f"<th>{_e(k)}</th>", f"<td>{_e(v)}</td>"] for k, v in rows])


def _headline(metrics: dict[str, Any]) -> str:
    rows = []
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m:
            rows.append([f"<td>{split}</td>"] + [f'<td class="num">{_e(_num(m.get(k)))}</td>'
                                                 for k in ("accuracy", "macro_f1", "loss", "n")])
    return _table(["split", "accuracy", "macro-F1", "loss", "examples"], rows)


def _per_class(m: dict[str, Any]) -> str:
    keys = ("precision", "recall", "f1", "support")
    rows = [[f"<td>{_e(label)}</td>"] + [f'<td class="num">{_e(_num(v.get(k)))}</td>' for k in keys]
            for label, v in m.get("per_class", {}).items()]
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
        if getattr(ex, "texts", None) is not None and hasattr(ex, "pairs"):  # text rows (audio: a clip's name)
            text = ex.texts[i] if ex.pairs is None else f"{ex.texts[i]}\n⟷ {ex.pairs[i]}"
        else:
            text = ex.names[i]
        rows.append([f'<td class="num">{i + 1}</td>', f'<td class="text">{_e(text)}</td>',
                     f"<td>{_e(ex.labels[i])}</td>", f"<td>{_e(labels[pred])}</td>",
                     f'<td class="num">{probs[i, pred]:.3f}</td>', f'<td class="num">{p_true[i]:.3f}</td>'])
    column = "text" if getattr(ex, "texts", None) is not None and hasattr(ex, "pairs") else "input"
    return _table(["#", column, "true label", "predicted", "confidence", "p(true label)"], rows)


def _misclassified_grid(ex, ev, labels: list[str], limit: int = 16) -> str:
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
    return (f"<p>{len(wrong)} of {len(ex.labels)} validation images misclassified"
            + (f"; the {len(shown)} most confident mistakes" if len(wrong) > len(shown) else "") + ":</p>" + _png(fig))


def _speech_headline(metrics: dict[str, Any]) -> str:
    """WER/CER per split, before (pre-trained model) and after fine-tuning."""
    before = metrics.get("before_finetuning") or {}
    rows = []
    for split in ("validation", "test", "guard"):
        m = metrics.get(split) if split != "guard" else (metrics.get("guard") or {}).get("after")
        if m:
            b = before.get(split) or {}
            rows.append([f"<td>{split}</td>"] + [f'<td class="num">{_e(_num(v))}</td>' for v in (
                b.get("wer"), m.get("wer"), b.get("cer"), m.get("cer"), m.get("loss"), m.get("n"))])
    return _table(["split", "WER before", "WER after", "CER before", "CER after", "loss", "utterances"], rows)


def _guard_note(metrics: dict[str, Any]) -> str:
    g = metrics.get("guard")
    if not g:
        return ('<p class="muted">No guard set: give --guard-data (general speech the model must not forget) to '
                "check that fine-tuning did not make the model worse elsewhere.</p>")
    cls = "warn" if g["forgetting"] else "muted"
    what = ("the model is forgetting general speech" if g["forgetting"] else "within the allowed increase")
    return (f'<p class="{cls}">Guard set {_e(g["source"])}: WER {g["wer_before"]:.4f} before, {g["wer_after"]:.4f} '
            f"after ({g['wer_increase']:+.4f}; allowed increase {g['max_wer_increase']:g}): {_e(what)}.</p>")


def _worst_utterances(items: list[dict[str, Any]]) -> str:
    if not items:
        return '<p class="muted">Every utterance was transcribed without a word error.</p>'
    rows = [[f'<td class="text">{_e(x["input"])}</td>', f'<td class="text">{_e(x["reference"])}</td>',
             f'<td class="text">{_e(x["hypothesis"])}</td>', f'<td class="num">{x["word_errors"]}</td>',
             f'<td class="num">{x["wer"]:.3f}</td>'] for x in items[:WORST_SHOWN]]
    return _table(["clip", "reference", "hypothesis", "word errors", "WER"], rows)


def _speech_parts(metrics: dict[str, Any]) -> list[str]:
    parts = ["<h2>Results</h2>", _speech_headline(metrics), _guard_note(metrics),
             '<p class="muted">WER/CER: corpus-level edits over reference words/characters, after the model\'s '
             "text normaliser; \"before\" is the pre-trained model on the same clips.</p>",
             "<h2>Training curves</h2>"]
    history = metrics.get("history") or []
    parts.append(_curves_png(history, ("wer", "cer")) if history else '<p class="muted">No evaluations were recorded.</p>')
    best = metrics.get("best_evaluation")
    if best:
        parts.append(f"<p>Kept weights from step {_e(best.get('step'))} (epoch {_e(best.get('epoch'))}).</p>")
    for split, items in (metrics.get("worst_utterances") or {}).items():
        parts += [f"<h2>Worst {split} utterances (most word errors, up to {WORST_SHOWN})</h2>", _worst_utterances(items)]
    return parts


def write_report(out: Path, cfg: RunConfig, metrics: dict, examples: dict, evals: dict, labels: list[str]) -> Path:
    """Write out/report.html atomically, so a crashed run never leaves a report that looks whole."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot's first import
    out = Path(out)
    if cfg.task == "speech-recognition":
        parts = [f"<h1>tunesmith run: {_e(out.name)}</h1>", "<h2>Run</h2>", _summary(cfg, metrics),
                 *_speech_parts(metrics)]
        return _write_page(out, parts, metrics)
    parts = [f"<h1>tunesmith run: {_e(out.name)}</h1>", "<h2>Run</h2>", _summary(cfg, metrics),
             "<h2>Results</h2>", _headline(metrics)]
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m and m.get("confusion_matrix"):
            parts += [f"<h3>Confusion matrix ({split})</h3>", _confusion_png(m["confusion_matrix"], split)]
    parts.append("<h2>Training curves</h2>")
    history = metrics.get("history") or []
    parts.append(_curves_png(history) if history else '<p class="muted">No evaluations were recorded.</p>')
    best = metrics.get("best_evaluation")
    if best:
        parts.append(f"<p>Kept weights from step {_e(best.get('step'))} (epoch {_e(best.get('epoch'))}).</p>")
    for split in ("validation", "test"):
        if metrics.get(split):
            parts += [f"<h2>Per-class results ({split})</h2>", _per_class(metrics[split])]
    val_ex, val_ev = examples.get("validation"), evals.get("validation")
    if val_ex is not None and val_ev is not None and val_ex.labels:
        from ..data.images import ImageExamples

        if isinstance(val_ex, ImageExamples):  # images: show them
            parts += ["<h2>Misclassified validation images</h2>", _misclassified_grid(val_ex, val_ev, labels)]
        parts += [f"<h2>Worst-classified validation examples (lowest probability of the true label, "
                  f"up to {WORST_SHOWN})</h2>", _worst(val_ex, val_ev, labels)]
    return _write_page(out, parts, metrics)


def _write_page(out: Path, parts: list[str], metrics: dict) -> Path:
    skipped = metrics.get("skipped_inputs") or []
    if skipped:
        parts += [f"<h2>Skipped inputs ({len(skipped)})</h2>",
                  _table(["input", "why"], [[f"<td>{_e(x['input'])}</td>", f"<td>{_e(x['reason'])}</td>"]
                                            for x in skipped])]
    warnings = metrics.get("warnings") or []
    parts.append("<h2>Warnings</h2>")
    parts.append("<ul>" + "".join(f'<li class="warn">{_e(w)}</li>' for w in warnings) + "</ul>" if warnings
                 else '<p class="muted">None.</p>')
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>tunesmith report: {_e(out.name)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")
    path = out / "report.html"
    tmp = out / f".report.html.tmp{os.getpid()}"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
