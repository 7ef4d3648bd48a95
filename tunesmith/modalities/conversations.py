"""Conversations: chat data in the four shapes people keep it in -> one list of messages per example,
and the helper a chat task encodes them with: the model's chat template rendered to tokens, with a
loss mask that covers exactly what the assistant says plus the token that ends its turn.

Shapes (`detect_format` reads them from the fields; a config can name one):
  messages           {"messages": [{"role": "system|user|assistant", "content": "..."}, ...]}  (OpenAI)
  sharegpt           {"conversations": [{"from": "human|gpt|system", "value": "..."}, ...]}
  prompt-completion  columns prompt, completion (optional system), in CSV/TSV/JSONL/Parquet
  alpaca             columns instruction, input (optional), output (optional system)

One example is one conversation, so any split of examples is a split by conversation, never by turn.

The mask without `{% generation %}` markers (SmolLM2's template, like most, has none): render the
conversation up to each assistant turn with the generation prompt, and up to the end of that turn;
both must be prefixes of the whole rendering (a template that rewrites earlier turns once later ones
follow is refused: nothing exact could be said about it). Between the two lies the turn's content and
whatever closes it; the loss takes the content and the first special token after it (`<|im_end|>`,
`<|eot_id|>`, `</s>`, `<end_of_turn>`), not the newline a template writes after that. Token positions
come from the fast tokenizer's character offsets over the whole rendering, so merges across a
boundary cannot shift the mask. Labels are built from this mask, never from `ids != pad`, so a
tokenizer whose pad is its eos (SmolLM2's GGUF declares pad == eos == 2) still trains the real eos.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError
from . import MODALITIES

FORMATS = ("messages", "sharegpt", "prompt-completion", "alpaca")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
}
TRAIN_ON = ("assistant", "all", "last")
IGNORE = -100  # the label torch's cross-entropy skips

# ChatML, for a base model without a chat template of its own (`chat.template: chatml`). Its two markers
# must be special tokens of the tokenizer (the chat task adds them when they are missing).
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


@dataclass
class ConversationExamples:
    """Conversations read from one file: `refs[i]` is how errors name example i ("file line 7")."""

    source: str
    conversations: list[list[dict[str, str]]]
    refs: list[str]
    format: str
    labels: list[str] | None = None  # conversations have no classes
    skipped: list[tuple[str, str]] = field(default_factory=list)
    to_answer: bool = False  # conversations so far, each ending with the user's turn (predict's inputs)

    def __len__(self) -> int:
        return len(self.conversations)

    def subset(self, idx: Sequence[int], source: str | None = None) -> ConversationExamples:
        return ConversationExamples(
            source or self.source,
            [self.conversations[i] for i in idx],
            [self.refs[i] for i in idx],
            self.format,
            to_answer=self.to_answer,
        )

    def dedup_keys(self) -> list[str]:
        """Equal keys: the same conversation, message for message (a train/validation leak)."""
        return [json.dumps(c, sort_keys=True, ensure_ascii=False) for c in self.conversations]

    def display(self, i: int, width: int = 160) -> str:
        """The conversation's last user message and the reply to it, shortened for a report."""
        conv = self.conversations[i]
        last = max((j for j, m in enumerate(conv) if m["role"] == "assistant"), default=len(conv) - 1)
        ask = next((m["content"] for m in reversed(conv[:last]) if m["role"] == "user"), "")
        text = (f"{ask} -> " if ask else "") + conv[last]["content"]
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "…"


def detect_format(fields: Sequence[str], source: str) -> str:
    """Which of FORMATS a table's fields say it is; an error listing what was found otherwise."""
    have = set(fields)
    if "messages" in have:
        return "messages"
    if "conversations" in have:
        return "sharegpt"
    if {"instruction", "output"} <= have:
        return "alpaca"
    if {"prompt", "completion"} <= have:
        return "prompt-completion"
    raise DataError(
        f"{source}: cannot tell the conversation format from its fields ({', '.join(sorted(have)) or 'none'}). "
        "Expected one of: `messages` (a list of {role, content}), `conversations` (ShareGPT: a list of "
        "{from, value}), `prompt` + `completion` columns, or `instruction` + `output` (+ `input`) columns "
        "(Alpaca). Rename the fields, or name the format with data.format (" + ", ".join(FORMATS) + ")."
    )


def _jsonl_records(p: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file."""
    from ..data.sources import _decode_utf8

    out = []
    for i, line in enumerate(_decode_utf8(p.read_bytes(), p).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{p} line {i}: not valid JSON ({e.msg}); each line must be one conversation object"
            ) from None
        if not isinstance(rec, dict):
            raise DataError(f'{p} line {i}: a JSON {type(rec).__name__}, expected an object like {{"messages": [...]}}')
        out.append((i, rec))
    if not out:
        raise DataError(f"{p} has no conversations (every line is blank)")
    return out


def _records(path: str | Path, role: str) -> list[tuple[str, dict]]:
    """(ref, record) for each row, the ref naming the file and its line (JSONL) or row (tables)."""
    import pandas as pd

    from ..data.sources import read_table, row_ref

    p = Path(path)
    if p.suffix.lower() in (".jsonl", ".ndjson") and p.is_file() and p.stat().st_size > 0:
        return [(f"{p} line {i}", rec) for i, rec in _jsonl_records(p)]
    df = read_table(p, role)
    records = df.to_dict("records")
    for r in records:  # pandas reads a missing field as NaN: make it absent, as JSON had it
        for k in [k for k, v in r.items() if not isinstance(v, (list, dict, str)) and pd.isna(v)]:
            del r[k]
    return [(row_ref(p, i), r) for i, r in enumerate(records)]


def _text(value: Any, ref: str, what: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise DataError(f"{ref}: {what} must be text, got {type(value).__name__}: {value!r:.80}")
    return value


def _messages(rec: dict, fmt: str, ref: str) -> list[dict[str, str]]:
    """One record in `fmt` -> [{"role", "content"}, ...], each part checked."""
    if fmt in ("messages", "sharegpt"):
        key, role_key, content_key = (
            ("messages", "role", "content") if fmt == "messages" else ("conversations", "from", "value")
        )
        turns = rec.get(key)
        if not isinstance(turns, list) or not turns:
            raise DataError(f"{ref}: `{key}` must be a non-empty list of {{{role_key}, {content_key}}} objects")
        out = []
        for j, t in enumerate(turns, start=1):
            if not isinstance(t, dict) or role_key not in t or content_key not in t:
                raise DataError(
                    f"{ref}: message {j} must be an object with `{role_key}` and `{content_key}`, got {t!r:.80}"
                )
            raw = t[role_key]
            roles = {r: r for r in ROLES} if fmt == "messages" else SHAREGPT_ROLES
            if not isinstance(raw, str) or raw.strip().lower() not in roles:
                raise DataError(
                    f"{ref}: message {j} has unknown {role_key} {raw!r}; allowed: {', '.join(roles)}. "
                    "Map other roles (tool, function, ...) to one of these or drop those messages."
                )
            out.append(
                {
                    "role": roles[raw.strip().lower()],
                    "content": _text(t[content_key], ref, f"message {j}'s {content_key}"),
                }
            )
        return out
    system = _text(rec.get("system"), ref, "`system`", required=False)
    if fmt == "prompt-completion":
        user, reply = _text(rec.get("prompt"), ref, "`prompt`"), _text(rec.get("completion"), ref, "`completion`")
    else:  # alpaca: the instruction, then its input (if any) below it
        instruction = _text(rec.get("instruction"), ref, "`instruction`")
        extra = _text(rec.get("input"), ref, "`input`", required=False)
        user = instruction + (f"\n\n{extra}" if extra and extra.strip() else "")
        reply = _text(rec.get("output"), ref, "`output`")
    return ([{"role": "system", "content": system}] if system and system.strip() else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": reply},
    ]


def check_conversation(conv: list[dict[str, str]], ref: str) -> None:
    """What every chat template needs: no empty message, system only first, an assistant turn to learn."""
    for j, m in enumerate(conv, start=1):
        if not m["content"].strip():
            raise DataError(f"{ref}: message {j} ({m['role']}) is empty; remove it or give it content")
        if m["role"] == "system" and j != 1:
            raise DataError(f"{ref}: message {j} is a system message; a system message may only come first")
    if not any(m["role"] == "assistant" for m in conv):
        raise DataError(
            f"{ref}: no assistant message, so nothing to learn from; every conversation needs at least one "
            "assistant reply (a prompt-only file is input for `predict`, not training data)"
        )


def read_conversations(path: str | Path, fmt: str | None = None, role: str = "data") -> ConversationExamples:
    """A conversation file -> ConversationExamples, every row checked; errors name the file and line."""
    rows = _records(path, role)
    fields = sorted({k for _, r in rows for k in r})
    if fmt is None:
        fmt = detect_format(fields, str(path))
    elif fmt not in FORMATS:
        raise DataError(f"data.format {fmt!r}: use one of {', '.join(FORMATS)}")
    convs, refs = [], []
    for ref, rec in rows:
        conv = _messages(rec, fmt, ref)
        check_conversation(conv, ref)
        convs.append(conv)
        refs.append(ref)
    return ConversationExamples(str(path), convs, refs, fmt)


# ---- encoding: the chat template's tokens and the loss mask ----


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # IGNORE where no loss
    truncated: bool = False  # later turns were cut at a turn boundary to fit max_length


class TemplateProblem(DataError):
    """The chat template cannot render this conversation, or cannot be masked exactly."""


def _render(tokenizer, messages, template: str | None, generation_prompt: bool, ref: str) -> str:
    import jinja2

    try:
        text = tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=generation_prompt
        )
    except jinja2.TemplateError as e:
        raise TemplateProblem(
            f"{ref}: the model's chat template rejects this conversation ({e}). Fix the roles (many templates "
            "want user and assistant to alternate, some allow no system message), or give another template "
            "with chat.template"
        ) from None
    except ValueError as e:  # transformers: no template at all
        raise TemplateProblem(f"{ref}: {e}") from None
    if not isinstance(text, str):  # some versions return a list for a batch of one
        text = text[0]
    return text


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    for tid, tok in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(tok, "special", False):
            ids.add(int(tid))
    return ids


def assistant_spans(tokenizer, conv, template: str | None, ref: str) -> tuple[str, list[tuple[int, int]]]:
    """The whole rendering, and for each assistant turn the characters from its first (after the
    generation prompt) to the end of its turn (before any later message's rendering)."""
    full = _render(tokenizer, conv, template, False, ref)
    spans = []
    for i, m in enumerate(conv):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, conv[:i], template, True, ref) if i else ""
        upto = _render(tokenizer, conv[: i + 1], template, False, ref)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise TemplateProblem(
                f"{ref}: the chat template renders message {i + 1} differently once later messages follow "
                "(it rewrites earlier turns), so the assistant's tokens cannot be located exactly. Give "
                "chat.train_on=last, or a template that renders each turn once (chat.template)"
            )
        spans.append((len(before), len(upto)))
    return full, spans


def encode_conversation(
    tokenizer,
    conv,
    *,
    train_on: str = "assistant",
    template: str | None = None,
    max_length: int | None = None,
    ref: str = "conversation",
) -> Encoded | None:
    """Render `conv` with the chat template and mark its loss tokens (`train_on`: every assistant
    turn, only the last, or all tokens). Longer than `max_length`: cut after the last assistant turn
    that fits (`truncated`), or None when even the first does not fit (the caller counts it)."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"chat.train_on {train_on!r}: use one of {', '.join(TRAIN_ON)}")
    if not getattr(tokenizer, "is_fast", False):
        raise TemplateProblem(
            f"{ref}: the tokenizer is not a fast (tokenizers) one, so character offsets are not available for an "
            "exact loss mask; use a model folder with a tokenizer.json"
        )
    full, spans = assistant_spans(tokenizer, conv, template, ref)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    special = _special_ids(tokenizer)
    replies = [m["content"].strip() for m in conv if m["role"] == "assistant"]
    labels = list(ids) if train_on == "all" else [IGNORE] * len(ids)
    turn_ends = []  # per assistant turn: the token index just after its end-of-turn token
    for k, ((start, end), reply) in enumerate(zip(spans, replies)):
        at = full.find(reply, start, end)  # where the reply ends (a template may trim it); -1: rewritten
        content_end = at + len(reply) if at >= 0 else start
        inside = [t for t, (a, b) in enumerate(offsets) if b > start and a < end and b > a]
        stop = next((t for t in inside if ids[t] in special and offsets[t][0] >= content_end), None)
        if stop is None:
            raise TemplateProblem(
                f"{ref}: the chat template closes an assistant turn with no special end-of-turn token "
                f"({full[start:end][-40:]!r}), so the model could not learn to stop. Use a template that ends "
                "turns with one (chat.template: chatml, which adds <|im_end|>)"
            )
        turn_ends.append(stop + 1)
        if train_on == "assistant" or (train_on == "last" and k == len(spans) - 1):
            for t in inside:
                if t <= stop:
                    labels[t] = ids[t]
    if max_length is None or len(ids) <= max_length:
        return Encoded(ids, labels)
    fits = [k for k, e in enumerate(turn_ends) if e <= max_length]
    if not fits:
        return None
    # cut after the last assistant turn that fits: the shorter conversation, encoded on its own
    last = [i for i, m in enumerate(conv) if m["role"] == "assistant"][fits[-1]]
    shorter = encode_conversation(tokenizer, conv[: last + 1], train_on=train_on, template=template, ref=ref)
    shorter.input_ids, shorter.labels = shorter.input_ids[:max_length], shorter.labels[:max_length]
    shorter.truncated = fits[-1] < len(turn_ends) - 1  # a reply was lost (not only what closes the last)
    return shorter


# ---- batches: padded, or packed ----


def pack(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped into rows of at most `max_tokens` tokens, first-fit by decreasing length (an
    example longer than `max_tokens` gets a row to itself). Rows stay bounded because attention on
    CPU is dense: one row of every conversation would cost the square of their total length."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, left in enumerate(room):
            if lengths[i] <= left:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(max_tokens - lengths[i])
    return rows


def collate_packed(examples: Sequence[dict], pad_id: int, max_tokens: int) -> dict:
    """Conversations ({"input_ids", "labels"}) packed into rows: positions restart at 0 for each
    conversation and there is no attention mask, so transformers' masking (masking_utils:
    find_packed_sequence_indices) lets attention stay inside each conversation. A row's padding is a
    block of its own (positions from 0, no labels), so it never joins the last conversation. The
    first label of each conversation is dropped: it would be predicted from the one before."""
    import torch

    groups = pack([len(e["input_ids"]) for e in examples], max_tokens)
    width = max(sum(len(examples[i]["input_ids"]) for i in g) for g in groups)
    ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    labels = torch.full((len(groups), width), IGNORE, dtype=torch.long)
    positions = torch.zeros((len(groups), width), dtype=torch.long)
    for r, g in enumerate(groups):
        at = 0
        for i in g:
            n = len(examples[i]["input_ids"])
            ids[r, at : at + n] = torch.as_tensor(examples[i]["input_ids"])
            labels[r, at : at + n] = torch.as_tensor(examples[i]["labels"])
            labels[r, at] = IGNORE
            positions[r, at : at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(width - at)
    return {"input_ids": ids, "position_ids": positions, "labels": labels}


def collate_padded(examples: Sequence[dict], pad_id: int) -> dict:
    """One conversation per row, right-padded, with an attention mask; padding carries no labels."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[r, :n] = torch.as_tensor(e["input_ids"])
        labels[r, :n] = torch.as_tensor(e["labels"])
        mask[r, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def next_token_loss(logits, labels):
    """Mean cross-entropy of each labelled token given the ones before it, over every labelled token
    of the batch (so a packed batch and the same conversations padded give the same loss). `logits`
    are for every position (rows x positions x vocabulary), or flattened (kept x vocabulary) for the
    positions `positions_to_keep(labels)` marks, in its order."""
    import torch.nn.functional as F

    shifted = labels[:, 1:]
    if logits.ndim == 2:
        target = shifted[positions_to_keep(labels)[:, :-1]]
        return F.cross_entropy(logits.float(), target, reduction="sum") / max(target.numel(), 1)
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), shifted.reshape(-1), ignore_index=IGNORE, reduction="sum"
    ) / (shifted != IGNORE).sum().clamp(min=1)


def row_losses(logits, labels):
    """(summed cross-entropy, labelled tokens) per row: next_token_loss split by conversation (rows of a
    padded batch), for the bootstrap interval of perplexity over conversations."""
    import torch
    import torch.nn.functional as F

    shifted = labels[:, 1:]
    if logits.ndim == 2:
        kept = positions_to_keep(labels)[:, :-1]
        losses = F.cross_entropy(logits.float(), shifted[kept], reduction="none")
        rows = kept.nonzero()[:, 0]
        sums = torch.zeros(labels.shape[0], dtype=torch.float64, device=losses.device)
        sums.index_add_(0, rows, losses.double())
        return sums, kept.sum(-1)
    losses = F.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), shifted, ignore_index=IGNORE, reduction="none"
    )  # [rows, positions]
    return losses.double().sum(-1), (shifted != IGNORE).sum(-1)


def positions_to_keep(labels):
    """The positions whose logits the loss reads: those followed by a labelled token."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep


# ---- the modality: what `train` reads and what `predict` accepts ----

FALLBACK_PROMPTS = [
    "Hello! Who are you?",
    "What is the capital of France?",
    "Give me one tip for writing clear emails.",
    "How do I reset my password?",
    "Say thank you in Spanish.",
    "What is 2 + 2?",
    "Name a fruit that is yellow.",
    "Can you summarise what you do in one sentence?",
]


def prompt_of(conv: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to its last assistant reply: what the model is asked to continue."""
    last = max((i for i, m in enumerate(conv) if m["role"] == "assistant"), default=len(conv))
    return conv[:last]


def input_conversation(x: Any, i: int) -> list[dict[str, str]]:
    """One `predict` input -> messages ending with a user turn: a text is one user message; a list of
    {role, content} messages (a conversation so far) is checked as training data is."""
    ref = f"input {i + 1}"
    if isinstance(x, str):
        if not x.strip():
            raise DataError(f"{ref} is empty; give a message to reply to")
        return [{"role": "user", "content": x}]
    if isinstance(x, dict) and "messages" in x:
        x = x["messages"]
    if not isinstance(x, list) or not x:
        raise DataError(
            f'{ref}: expected a message (text) or a list of {{"role", "content"}} messages, got {type(x).__name__}'
        )
    conv = _messages({"messages": x}, "messages", ref)
    for j, m in enumerate(conv, start=1):
        if not m["content"].strip():
            raise DataError(f"{ref}: message {j} ({m['role']}) is empty; remove it or give it content")
    if conv[-1]["role"] != "user":
        raise DataError(f"{ref}: the last message is {conv[-1]['role']!r}; end with the user message to reply to")
    return conv


@MODALITIES.register("conversations")
class ConversationsModality:
    name = "conversations"
    example_input = "How do I reset my password?"
    request_kind = "messages"
    media_types = ()
    streams = False

    def from_request(self, values: list, limits) -> list:
        """A user message (text), or a conversation: a list of {"role", "content"} ending with the user's
        turn; every message's text within limits.max_text_chars."""
        from ..errors import RequestError
        from . import request_texts

        out: list = []
        for i, v in enumerate(values):
            if isinstance(v, str):
                out += request_texts([v], limits)
                continue
            if not isinstance(v, list) or not v or not all(isinstance(m, dict) for m in v):
                expected = 'expected a message (text) or a list of {"role", "content"} messages'
                raise RequestError(f"inputs[{i}]", expected)
            for j, m in enumerate(v):
                content = m.get("content")
                if not isinstance(content, str) or len(content) > limits.max_text_chars:
                    raise RequestError(
                        f"inputs[{i}][{j}].content",
                        f"expected text of at most {limits.max_text_chars} characters",
                        413 if isinstance(content, str) else 422,
                    )
            try:
                input_conversation(v, i)
            except DataError as e:
                raise RequestError(f"inputs[{i}]", str(e)) from None
            out.append(v)
        return out

    def read(self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None) -> ConversationExamples:
        return read_conversations(path, getattr(data_cfg, "format", None), role)

    def examples_from_inputs(self, inputs: Sequence[Any], pairs: Sequence[str] | None = None) -> ConversationExamples:
        if pairs is not None:
            raise DataError("chat models take messages, not text pairs")
        convs = [input_conversation(x, i) for i, x in enumerate(inputs)]
        refs = [f"input {i + 1}" for i in range(len(convs))]
        return ConversationExamples("input", convs, refs, "messages", to_answer=True)

    def predict_inputs(self, examples: ConversationExamples) -> tuple[list, list | None]:
        """`predict --file` rows: each conversation up to its last reply (the reply is what is generated)."""
        return [prompt_of(c) or c for c in examples.conversations], None

    def probe_inputs(self, examples: ConversationExamples | None, n: int) -> list:
        if examples is None:
            return list(FALLBACK_PROMPTS[:n])
        return [prompt_of(c) for c in examples.conversations[:n]]

    def pipeline_inputs(self, inputs: list, preprocessor) -> list:
        return [input_conversation(x, i) for i, x in enumerate(inputs)]
