"""The speech recognition parts of report.html and README.md: WER/CER before and after fine-tuning,
the guard set (forgetting check), the worst utterances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .card_helpers import cell, fmt, with_ci
from .report import WORST_SHOWN, _e, _num, _table


def _speech_headline(metrics: dict[str, Any]) -> str:
    """WER/CER per split, before (pre-trained model) and after fine-tuning."""
    before = metrics.get("before_finetuning") or {}
    rows = []
    for split in ("validation", "test", "guard"):
        m = metrics.get(split) if split != "guard" else (metrics.get("guard") or {}).get("after")
        if m:
            b = before.get(split) or {}
            rows.append(
                [f"<td>{split}</td>"]
                + [
                    f'<td class="num">{_e(v)}</td>'
                    for v in (
                        with_ci(b, "wer"),
                        with_ci(m, "wer"),
                        with_ci(b, "cer"),
                        with_ci(m, "cer"),
                        _num(m.get("loss")),
                        _num(m.get("n")),
                    )
                ]
            )
    heads = ["WER before", "WER after", "CER before", "CER after"]
    return _table(["split", *(f"{h} [95% CI]" for h in heads), "loss", "utterances"], rows)


def _guard_note(metrics: dict[str, Any]) -> str:
    g = metrics.get("guard")
    if not g:
        return (
            '<p class="muted">No guard set: give --guard-data (general speech the model must not forget) to '
            "check that fine-tuning did not make the model worse elsewhere.</p>"
        )
    cls = "warn" if g["forgetting"] else "muted"
    what = "the model is forgetting general speech" if g["forgetting"] else "within the allowed increase"
    return (
        f'<p class="{cls}">Guard set {_e(g["source"])}: WER {g["wer_before"]:.4f} before, {g["wer_after"]:.4f} '
        f"after ({g['wer_increase']:+.4f}; allowed increase {g['max_wer_increase']:g}): {_e(what)}.</p>"
    )


def _worst_utterances(items: list[dict[str, Any]]) -> str:
    if not items:
        return '<p class="muted">Every utterance was transcribed without a word error.</p>'
    rows = [
        [
            f'<td class="text">{_e(x["input"])}</td>',
            f'<td class="text">{_e(x["reference"])}</td>',
            f'<td class="text">{_e(x["hypothesis"])}</td>',
            f'<td class="num">{x["word_errors"]}</td>',
            f'<td class="num">{x["wer"]:.3f}</td>',
        ]
        for x in items[:WORST_SHOWN]
    ]
    return _table(["clip", "reference", "hypothesis", "word errors", "WER"], rows)


def report_sections(metrics: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(results: WER/CER before and after, the guard set; details: the worst utterances)."""
    results = [
        _speech_headline(metrics),
        _guard_note(metrics),
        '<p class="muted">WER/CER: corpus-level edits over reference words/characters, after the model\'s '
        'text normaliser; "before" is the pre-trained model on the same clips.</p>',
    ]
    details = []
    for split, items in (metrics.get("worst_utterances") or {}).items():
        details += [
            f"<h2>Worst {split} utterances (most word errors, up to {WORST_SHOWN})</h2>",
            _worst_utterances(items),
        ]
    return results, details


# -- README.md --------------------------------------------------------------------------------------
def _results_md(metrics: dict[str, Any]) -> list[str]:
    """WER/CER per split, before and after fine-tuning, and the guard set's forgetting check."""
    before = metrics.get("before_finetuning") or {}
    lines = [
        "| split | utterances | WER before [95% CI] | WER after [95% CI] | CER after [95% CI] | loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for split in ("validation", "test"):
        m = metrics.get(split)
        if m:
            lines.append(
                f"| {split} | {fmt(m.get('n'))} | {with_ci(before.get(split), 'wer')} | "
                f"{with_ci(m, 'wer')} | {with_ci(m, 'cer')} | {fmt(m.get('loss'))} |"
            )
    g = metrics.get("guard")
    if g:
        lines.append(
            f"| guard | {fmt(g['after'].get('n'))} | {fmt(g['wer_before'])} | {fmt(g['wer_after'])} | "
            f"{fmt(g['after'].get('cer'))} | {fmt(g['after'].get('loss'))} |"
        )
        verdict = (
            f"**Warning:** WER on the guard set (`{cell(g['source'])}`, general speech the model must not "
            f"forget) rose by {g['wer_increase']:+.4f}, more than the allowed {g['max_wer_increase']:g}: this "
            "model has forgotten some of what it knew."
            if g["forgetting"]
            else f"Guard set (`{cell(g['source'])}`, general speech the model must not forget): WER changed by "
            f"{g['wer_increase']:+.4f} (allowed increase {g['max_wer_increase']:g})."
        )
        lines += ["", verdict]
    lines += [
        "",
        "WER and CER are corpus-level (edits / reference words or characters), after the model's text "
        'normaliser (Whisper\'s English normaliser for English, its basic normaliser otherwise); "before" '
        "is the pre-trained model on the same clips.",
    ]
    return lines


def card_sections(out: Path, cfg, metrics: dict, window_lines: list[str]):
    from ..tasks.base import CardSections

    state = metrics.get("run", {}).get("task_state") or {}
    d = cfg.data
    kind = {
        "seq2seq": "encoder-decoder (Whisper): text generated token by token after the prompt "
        f"{state.get('prompt_ids')}",
        "ctc": "encoder + CTC head over a character vocabulary built from the training transcripts (vocab.json)",
    }.get(state.get("kind"), "")
    decoding = "greedy decoding" if cfg.speech.num_beams == 1 else f"beam search, {cfg.speech.num_beams} beams"
    return CardSections(
        title="A speech recognition model fine-tuned with tunesmith.",
        description=[f"- Kind: {kind}", f"- Language: `{state.get('language')}`"],
        data=[
            f"- Transcripts: column `{d.text_column}`",
            f"- Guard set: `{d.guard}`" if d.guard else "- Guard set: none (give --guard-data to check forgetting)",
        ],
        procedure=[f"- SpecAugment: {'on' if cfg.speech.spec_augment else 'off'}"],
        results=_results_md(metrics),
        loading_note=[
            "Its decoding settings are in generation_config.json, so `pipeline()` writes the same text as tunesmith.",
            "",
        ],
        limitations=[
            "- The scores above were measured on the clips named here; speakers, accents, microphones and "
            "vocabulary unlike them may fare worse.",
            f"- Clips are transcribed whole, up to {cfg.speech.max_new_tokens} tokens ({decoding})."
            if state.get("kind") == "seq2seq"
            else "- Only characters seen in the training transcripts can be written.",
            *window_lines,
        ],
        front={"language": [state["language"]]} if state.get("language") else {},
    )
