"""WER and CER with jiwer, after the model's own text normaliser.

Scores are corpus-level (total edits / total reference words or characters), the way papers and
the Whisper recipe report them, not a mean of per-utterance rates. Both sides go through the same
normaliser first (Whisper's EnglishTextNormalizer for English, BasicTextNormalizer otherwise), so
"Hello, world!" vs "hello world" is not an error. A reference that normalises to nothing has no
words to get wrong: each hypothesis word on it counts as an insertion (jiwer refuses empty
references, so they are scored here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def text_normaliser(kind: str, tokenizer=None) -> Callable[[str], str]:
    """ "english": Whisper's EnglishTextNormalizer (with the tokenizer's spelling map, if it ships
    one); "basic": its BasicTextNormalizer (lower case, no punctuation or symbols, any language)."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    if kind == "english":
        spelling = getattr(tokenizer, "english_spelling_normalizer", None) or {}
        return EnglishTextNormalizer(spelling)
    if kind == "basic":
        return BasicTextNormalizer()
    raise ValueError(f"unknown normaliser {kind!r}")


def _edits(ref: str, hyp: str, chars: bool) -> tuple[int, int]:
    """(edits, reference length) for one utterance, in words or characters."""
    import jiwer

    ref_units = list(ref) if chars else ref.split()
    hyp_units = list(hyp) if chars else hyp.split()
    if not ref_units:
        return len(hyp_units), 0
    if not hyp_units:
        return len(ref_units), len(ref_units)
    out = jiwer.process_characters(ref, hyp) if chars else jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref_units)


def speech_metrics(
    references: Sequence[str], hypotheses: Sequence[str], normalise: Callable[[str], str]
) -> dict[str, Any]:
    """{"wer", "cer", "n", "words", "per_utterance": [{"wer", "cer", "word_errors", "words", "char_errors",
    "chars"}]}."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    totals = {"w_err": 0, "w_ref": 0, "c_err": 0, "c_ref": 0}
    per = []
    for ref, hyp in zip(references, hypotheses):
        r, h = " ".join(normalise(ref).split()), " ".join(normalise(hyp).split())
        we, wn = _edits(r, h, chars=False)
        ce, cn = _edits(r, h, chars=True)
        totals["w_err"] += we
        totals["w_ref"] += wn
        totals["c_err"] += ce
        totals["c_ref"] += cn
        per.append(
            {
                "wer": we / wn if wn else float(we > 0),
                "cer": ce / cn if cn else float(ce > 0),
                "word_errors": we,
                "words": wn,
                "char_errors": ce,
                "chars": cn,
            }
        )
    wer = totals["w_err"] / totals["w_ref"] if totals["w_ref"] else float(totals["w_err"] > 0)
    cer = totals["c_err"] / totals["c_ref"] if totals["c_ref"] else float(totals["c_err"] > 0)
    return {"wer": wer, "cer": cer, "n": len(references), "words": totals["w_ref"], "per_utterance": per}


def speech_intervals(per_utterance: Sequence[dict]) -> dict[str, list[float]]:
    """95% bootstrap intervals of WER and CER over utterances (evaluation/intervals.py)."""
    import numpy as np

    from .intervals import bootstrap, ratio

    cols = {"wer": ("word_errors", "words"), "cer": ("char_errors", "chars")}
    return {
        k: bootstrap(np.array([[u[a], u[b]] for u in per_utterance], dtype=float), ratio) for k, (a, b) in cols.items()
    }


def worst_utterances(
    names: Sequence[str],
    references: Sequence[str],
    hypotheses: Sequence[str],
    per_utterance: Sequence[dict],
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The utterances with the most word errors (then highest WER): where to look first."""
    order = sorted(
        range(len(references)), key=lambda i: (-per_utterance[i]["word_errors"], -per_utterance[i]["wer"], i)
    )
    return [
        {
            "input": names[i],
            "reference": references[i],
            "hypothesis": hypotheses[i],
            "wer": per_utterance[i]["wer"],
            "word_errors": per_utterance[i]["word_errors"],
        }
        for i in order[:limit]
        if per_utterance[i]["word_errors"] > 0
    ]


def guard_check(
    source: str, before: dict[str, Any], after: dict[str, Any], max_increase: float
) -> tuple[dict, str | None]:
    """Catastrophic forgetting check on the guard set: (summary for metrics.json, warning or None).
    The warning fires when WER rose by more than `max_increase` (absolute)."""
    rise = after["wer"] - before["wer"]
    summary = {
        "source": source,
        "wer_before": before["wer"],
        "wer_after": after["wer"],
        "wer_increase": rise,
        "max_wer_increase": max_increase,
        "forgetting": rise > max_increase,
        "before": before,
        "after": after,
    }
    if rise <= max_increase:
        return summary, None
    return summary, (
        f"guard set {source}: WER rose from {before['wer']:.4f} to {after['wer']:.4f} (+{rise:.4f}, more "
        f"than train.guard_max_wer_increase={max_increase:g}): the model is forgetting general speech. "
        "Lower train.lr, train fewer epochs, use strategy lora or partial, or mix general speech into "
        "the training data."
    )
