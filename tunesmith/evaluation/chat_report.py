"""The chat parts of report.html and README.md: held-out loss and perplexity before and after
fine-tuning, the generated replies' scores, sample replies, and the conversations cut for length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .card_helpers import cell, fmt, with_ci
from .report import _e, _num, _table

GENERATION_KEYS = ("stop_rate", "reply_tokens", "distinct_2", "chrf")
GENERATION_NAMES = {
    "stop_rate": "stop rate",
    "reply_tokens": "reply tokens",
    "distinct_2": "distinct-2",
    "chrf": "chrF",
}

SAMPLE_NAMES = {"prompt": "prompt", "reference": "reference", "before": "before fine-tuning", "reply": "after"}


def _sample_columns(samples: list[dict]) -> list[str]:
    return [k for k in SAMPLE_NAMES if k != "before" or any("before" in s for s in samples)]


def _rows(metrics: dict[str, Any]) -> list[tuple[str, dict, dict]]:
    """(split, before, after) for the scored splits."""
    before = metrics.get("before_finetuning") or {}
    return [(s, before.get(s) or {}, metrics[s]) for s in ("validation", "test") if metrics.get(s)]


def _cut_note(metrics: dict[str, Any]) -> str | None:
    cuts = metrics.get("length_cuts") or {}
    if not cuts:
        return None
    parts = [
        f"{src}: {c['cut']} cut after the last reply that fits, {c['dropped']} dropped, of {c['of']}"
        for src, c in cuts.items()
    ]
    return "Conversations longer than model.max_length: " + "; ".join(parts) + "."


def report_sections(metrics: dict[str, Any]) -> tuple[list[str], list[str]]:
    rows = []
    for split, b, a in _rows(metrics):
        rows.append(
            [f"<td>{split}</td>"]
            + [
                f'<td class="num">{_e(v)}</td>'
                for v in (
                    with_ci(b, "loss"),
                    with_ci(a, "loss"),
                    with_ci(b, "perplexity", 2),
                    with_ci(a, "perplexity", 2),
                    _num(a.get("n")),
                )
            ]
        )
    heads = ["loss before", "loss after", "perplexity before", "perplexity after"]
    results = [
        _table(["split", *(f"{h} [95% CI]" for h in heads), "conversations"], rows),
        '<p class="muted">Loss: mean cross-entropy per assistant token (the loss mask: each reply and the token '
        'that ends its turn); "before" is the untouched model on the same conversations.</p>',
    ]
    gen = []
    for split, b, a in _rows(metrics):
        if "chrf" in a:
            gen.append(
                [f"<td>{split}</td>", f'<td class="num">{a["generated"]}</td>']
                + [f'<td class="num">{_e(_num(b.get(k)))} → {_e(_num(a.get(k)))}</td>' for k in GENERATION_KEYS]
            )
    if gen:
        results.append(
            _table(["split", "replies", *(f"{GENERATION_NAMES[k]} before → after" for k in GENERATION_KEYS)], gen)
        )
        results.append(
            '<p class="muted">Greedy replies to the first conversations of each split: stop rate = share that ended '
            "their turn before the token limit; distinct-2 = distinct word bigrams / all (1: no repetition); chrF "
            "against the reference reply (sacrebleu).</p>"
        )
    g = metrics.get("guard")
    if g:
        cls = "warn" if g["forgetting"] else "muted"
        what = "the model is forgetting general conversation" if g["forgetting"] else "within the allowed increase"
        results.append(
            f'<p class="{cls}">Guard set {_e(g["source"])}: loss {g["loss_before"]:.4f} before, {g["loss_after"]:.4f} '
            f"after ({g['loss_increase']:+.4f}; allowed increase {g['max_loss_increase']:g}): {_e(what)}.</p>"
        )
    else:
        results.append(
            '<p class="muted">No guard set: give --guard-data (general conversations the model must not forget) to '
            "check that fine-tuning did not make the model worse elsewhere.</p>"
        )
    note = _cut_note(metrics)
    if note:
        results.append(f'<p class="warn">{_e(note)}</p>')
    details = []
    samples = metrics.get("samples") or []
    if samples:
        keys = _sample_columns(samples)
        details += [
            "<h2>Sample replies (validation), before and after fine-tuning</h2>",
            _table(
                [SAMPLE_NAMES[k] for k in keys],
                [[f'<td class="text">{_e(s.get(k, ""))}</td>' for k in keys] for s in samples],
            ),
        ]
    return results, details


def card_sections(out: Path, cfg, metrics: dict[str, Any]):
    from ..tasks.base import CardSections

    lines = [
        "| split | conversations | loss before | loss after [95% CI] | perplexity after [95% CI] |",
        "|---|---:|---:|---:|---:|",
    ]
    for split, b, a in _rows(metrics):
        lines.append(
            f"| {split} | {fmt(a.get('n'))} | {fmt(b.get('loss'))} | {with_ci(a, 'loss')} | "
            f"{with_ci(a, 'perplexity', 2)} |"
        )
    val = metrics.get("validation") or {}
    if "chrf" in val:
        lines += [
            "",
            f"Greedy replies to {val['generated']} validation conversations: stop rate {fmt(val['stop_rate'], 2)}, "
            f"{fmt(val['reply_tokens'], 1)} tokens on average, distinct-2 {fmt(val['distinct_2'], 3)}, "
            f"chrF {fmt(val['chrf'], 1)}.",
        ]
    g = metrics.get("guard")
    if g:
        lines += [
            "",
            f"Guard set (`{cell(g['source'])}`, general conversations the model must not forget): loss "
            f"{fmt(g['loss_before'])} before, {fmt(g['loss_after'])} after ({g['loss_increase']:+.4f}; allowed "
            f"increase {g['max_loss_increase']:g})" + (": **the model is forgetting**." if g["forgetting"] else "."),
        ]
    samples = metrics.get("samples") or []
    if samples:
        keys = _sample_columns(samples)
        lines += ["", "| " + " | ".join(SAMPLE_NAMES[k] for k in keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(cell(s.get(k, "")) for k in keys) + " |" for s in samples]
    note = _cut_note(metrics)
    return CardSections(
        title="A chat model fine-tuned with tunesmith.",
        description=["- Kind: causal language model, fine-tuned on conversations (replies generated token by token)"],
        data=[
            f"- Conversations: {cfg.data.format or 'format detected from the fields'}",
            f"- Loss on: {cfg.chat.train_on} tokens"
            + (" (each assistant reply and the token that ends its turn)" if cfg.chat.train_on == "assistant" else ""),
            *([f"- {note}"] if note else []),
        ],
        procedure=[
            f"- Chat template: {cfg.chat.template or 'the model`s own'}",
            f"- Longest conversation: {cfg.model.max_length} tokens",
        ],
        results=lines,
        loading_note=[
            "Its decoding settings (greedy, stopping at the end of the assistant's turn) are in "
            "generation_config.json.",
            "",
        ],
        limitations=[
            "- A language model can state false things fluently; the scores above say how close its replies came "
            "to the reference replies of these conversations, not whether they are true.",
            f"- Replies are generated greedily, up to {cfg.chat.max_new_tokens} tokens.",
        ],
    )
