"""Chat: supervised fine-tuning of a causal language model on conversations.

Each conversation is rendered with the model's chat template (or `chat.template`) and trained with
the loss on what the assistant says plus the token that ends its turn (modalities/conversations.py
builds that mask exactly, for templates without generation markers too). The model is the
`*ForCausalLM` itself (models/causal_lm_backbone.py: its final norm is the task head), LoRA on its
attention and MLP projections by default.

Evaluation: the held-out assistant-token loss and its perplexity, before (the untouched model) and
after; and, for the first `chat.eval_generations` conversations, the last reply generated greedily
from the conversation before it, scored by stop rate (it ended its turn before `max_new_tokens`),
length, repetition (distinct-2) and chrF against the reference reply (sacrebleu).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..modalities.conversations import (
    CHATML,
    CHATML_TOKENS,
    IGNORE,
    ConversationExamples,
    TemplateProblem,
    collate_packed,
    collate_padded,
    encode_conversation,
    next_token_loss,
    positions_to_keep,
    prompt_of,
    row_losses,
)
from . import TASKS
from .base import CardSections, EvalOutput, TaskDefaults, TaskExample, unwrap

SAMPLES_SHOWN = 5  # sample replies in the report and card


def load_template(spec: str) -> str:
    """chat.template: "chatml" or a Jinja file's text."""
    if spec == "chatml":
        return CHATML
    p = Path(spec)
    if not p.is_file():
        raise ConfigError(
            f"chat.template {spec!r}: not `chatml` and no such file; give chatml or a Jinja template file"
        )
    return p.read_text(encoding="utf-8")


def end_of_turn_id(tokenizer) -> int:
    """The token the template closes an assistant turn with (what generation stops at)."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    enc = encode_conversation(tokenizer, probe, ref="the chat template")
    return [lab for lab in enc.labels if lab != IGNORE][-1]


def distinct_2(texts: Sequence[str]) -> float | None:
    """Distinct bigrams over all bigrams of the replies (1: no repetition); None without bigrams."""
    grams = [tuple(w[i : i + 2]) for t in texts for w in [t.split()] for i in range(len(w) - 1)]
    return len(set(grams)) / len(grams) if grams else None


@TASKS.register("chat")
class ChatTask(TaskDefaults):
    name = "chat"
    modality = "conversations"
    pipeline_task = "text-generation"
    output = "text"
    output_keys = ("text",)
    metrics_tracked = ("loss", "perplexity")
    default_metric = "loss"
    lower_is_better = frozenset({"loss", "perplexity"})
    display_names = {"loss": "loss", "perplexity": "perplexity"}
    default_strategy = "lora"
    interactive = True
    pooled_features = False  # a language model's head is its whole decoder: no head-only, no auto
    extra_splits = ("guard",)  # general conversations scored before and after: the forgetting check
    config_sections = frozenset({"chat", "data.format", "data.guard"})
    compares_with_base = True  # `evaluate` scores the untouched model too
    labels: list[str] = []
    pipeline_kwargs: dict[str, Any] = {}

    def __init__(
        self, tokenizer, options: dict[str, Any], max_length: int, dropout: float = 0.0, generation_config=None
    ):
        self.tokenizer = self.preprocessor = tokenizer
        self.options = dict(options)
        self.max_length = int(max_length)
        self.dropout = dropout
        self.train_on = self.options.get("train_on", "assistant")
        self.eot_id = end_of_turn_id(tokenizer)
        self.generation_config = self._generation(generation_config)
        self.label2id: dict[str, int] = {}
        self.cut: dict[str, dict[str, int]] = {}  # per data source: conversations cut at a turn, or dropped

    def _generation(self, base):
        """Greedy decoding up to chat.max_new_tokens, stopping at the end of the assistant's turn (or eos),
        with chat.repetition_penalty."""
        from transformers import GenerationConfig

        gc = copy.deepcopy(base) if base is not None else GenerationConfig()
        stops = [self.eot_id] + ([self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else [])
        gc.eos_token_id = sorted(set(stops))
        gc.pad_token_id = self.tokenizer.pad_token_id
        gc.do_sample, gc.num_beams = False, 1
        gc.temperature = gc.top_p = gc.top_k = None
        gc.max_length = None
        gc.max_new_tokens = int(self.options.get("max_new_tokens") or 128)
        gc.repetition_penalty = float(self.options.get("repetition_penalty", 1.0))  # runs saved before it: none
        return gc

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_data(cls, backbone, tokenizer, train, cfg, reporter=None) -> ChatTask:
        """The model's tokenizer with the chat template it will train and answer with: its own, or
        chat.template (ChatML's markers added as special tokens, the embeddings grown, where missing)."""
        spec = cfg.chat.template
        vocab = backbone.encoder.get_input_embeddings().weight.shape[0]
        if spec is None and not tokenizer.chat_template:
            raise ConfigError(
                f"{cfg.model.name}: the model has no chat template (a base model?), so there is no way to render "
                "conversations it would recognise; give --set chat.template=chatml (built in) or a Jinja file"
            )
        if spec is not None:
            tokenizer.chat_template = load_template(spec)
            if spec == "chatml":
                missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
                if missing:
                    tokenizer.add_special_tokens({"additional_special_tokens": missing})
                    backbone.encoder.resize_token_embeddings(len(tokenizer))
                    if reporter is not None:
                        reporter.info(f"chat.template chatml: added {', '.join(missing)} to the tokenizer")
        try:
            task = cls(
                tokenizer,
                cfg.chat.model_dump(),
                cfg.model.max_length,
                cfg.train.dropout,
                backbone.encoder.generation_config,
            )
        except TemplateProblem as e:
            raise ConfigError(f"{cfg.model.name}: {e}") from None
        if len(tokenizer) > vocab:
            # the grown embeddings are part of the model now: adapters alone over the base would not load
            task.merge_adapters_on_save = True
        return task

    @classmethod
    def from_saved(cls, folder: Path, meta: dict[str, Any], preprocessor=None) -> ChatTask:
        from transformers import GenerationConfig

        from ..models.causal_lm_backbone import load_causal_tokenizer

        state = meta["task_state"]
        tokenizer = preprocessor or load_causal_tokenizer(folder, bool(meta.get("trust_remote_code", False)))
        return cls(
            tokenizer,
            state["options"],
            state["max_length"],
            state.get("dropout", 0.0),
            GenerationConfig.from_pretrained(folder),
        )

    def state(self) -> dict[str, Any]:
        return {"options": self.options, "max_length": self.max_length, "dropout": self.dropout, "eot_id": self.eot_id}

    @classmethod
    def split_key(cls, examples) -> None:
        return None  # conversations, not classes: a random split, by conversation

    @classmethod
    def check_splits(cls, train, validation, test, preflight) -> None:
        from ..data.preflight import warn_of_leaks

        warn_of_leaks(train, validation, preflight, "conversations", "loss")

    def build_head(self, backbone: nn.Module) -> nn.Module:
        """The decoder's final norm, moved out into the head; this run's decoding settings go on the model
        (where `generate()` and a saved folder read them)."""
        backbone.encoder.generation_config = copy.deepcopy(self.generation_config)
        return backbone.take_head()

    def config_entries(self) -> dict[str, Any]:
        return {"pad_token_id": self.tokenizer.pad_token_id}

    def save_preprocessing(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)
        self.generation_config.save_pretrained(folder)

    def before_model(self, fresh, base_dir: Path, model_cfg):
        """The model as shipped: the run's own model before training (its adapters start at zero), or,
        in `evaluate`, the base model loaded again with this run's tokenizer and template."""
        if fresh is not None:
            return fresh
        from ..models.causal_lm_backbone import CausalLMBackbone
        from .base import TaskModel

        backbone, _ = CausalLMBackbone.load(base_dir, model_cfg)
        if len(self.tokenizer) > backbone.encoder.get_input_embeddings().weight.shape[0]:
            backbone.encoder.resize_token_embeddings(len(self.tokenizer))  # chatml markers the run added
        return TaskModel(backbone, self.build_head(backbone)).eval()

    # -- data ------------------------------------------------------------------------------------
    def _prompt_ids(self, conv: list[dict[str, str]], ref: str) -> list[int]:
        from ..modalities.conversations import _render

        text = _render(self.tokenizer, conv, None, True, ref)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, examples: ConversationExamples, augment: bool = False, reporter=None) -> list[dict]:
        """Conversations with a reply: the rendered tokens, their loss mask, and the prompt its last reply
        answers (for generation). Conversations to answer (predict): the prompt alone. A conversation
        longer than model.max_length is cut after the last reply that fits, or dropped where none
        does; both are counted, in the log and the report."""
        rows: list[dict] = []
        cut = dropped = 0
        for i, conv in enumerate(examples.conversations):
            ref = examples.refs[i] if i < len(examples.refs) else f"conversation {i + 1}"
            if examples.to_answer:
                ids = self._prompt_ids(conv, ref)
                rows.append({"prompt_ids": ids, "length": len(ids)})
                continue
            enc = encode_conversation(self.tokenizer, conv, train_on=self.train_on, max_length=self.max_length, ref=ref)
            if enc is None:
                dropped += 1
                continue
            cut += enc.truncated
            prompt = prompt_of(conv)
            rows.append(
                {
                    "input_ids": enc.input_ids,
                    "labels": enc.labels,
                    "length": len(enc.input_ids),
                    "prompt_ids": self._prompt_ids(prompt, ref),
                    "reference": conv[len(prompt)]["content"].strip(),
                }
            )
        if cut or dropped:
            self.cut[examples.source] = {"cut": cut, "dropped": dropped, "of": len(examples)}
            msg = (
                f"{examples.source}: {cut} of {len(examples)} conversations were longer than model.max_length "
                f"({self.max_length} tokens) and were cut after the last reply that fits; {dropped} were dropped "
                "(not even their first reply fits). Raise model.max_length to keep them"
            )
            if reporter is not None:
                reporter.warn(msg)
        if not rows:
            raise DataError(
                f"{examples.source}: no conversation fits in model.max_length ({self.max_length} tokens); raise it"
            )
        return rows

    def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """One conversation per row, padded; or, with chat.packing, several per row without padding."""
        if self.options.get("packing"):
            return collate_packed(rows, int(self.tokenizer.pad_token_id), self.max_length)
        return collate_padded(rows, int(self.tokenizer.pad_token_id))

    def feature_row(self, row: dict, features: torch.Tensor) -> dict:
        raise ConfigError("head-only does not apply to chat")  # refused by the config first

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum()) if "labels" in batch else 0  # loss-bearing tokens

    # -- training / evaluation -------------------------------------------------------------------
    def compute_loss(self, model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The loss from logits at the positions that predict a labelled token only (where the model
        computes them so; all of them otherwise)."""
        logits = model({**batch, "logits_to_keep": positions_to_keep(batch["labels"])})
        return {"loss": next_token_loss(logits, batch["labels"]), "logits": logits}

    @torch.no_grad()
    def generate(self, model, prompts: Sequence[list[int]]) -> list[tuple[str, int, bool]]:
        """Greedy replies to tokenised prompts: (text, tokens generated, whether it ended its turn).
        Prompts of one length run together (no padding, so a reply never depends on its batch)."""
        raw = unwrap(model)
        lm = raw.backbone.encoder
        device = next(raw.parameters()).device
        stops = set(self.generation_config.eos_token_id)
        by_length: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_length.setdefault(len(p), []).append(i)
        out: list[tuple[str, int, bool] | None] = [None] * len(prompts)
        for n, idx in by_length.items():
            ids = torch.tensor([prompts[i] for i in idx], dtype=torch.long, device=device)
            gen = lm.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=self.generation_config
            )
            for j, i in enumerate(idx):
                new = gen[j, n:].tolist()
                end = next((k for k, t in enumerate(new) if t in stops), None)
                kept = new if end is None else new[:end]
                text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
                out[i] = (text, len(kept), end is not None)
        return out  # type: ignore[return-value]

    def stream(
        self, model, messages: list[dict[str, str]], max_new_tokens: int | None = None, temperature: float | None = None
    ):
        """The reply to `messages` (ending with the user's turn), yielded piece by piece as it is
        generated: greedy, as `predict`, or sampled at `temperature` (> 0): `tunesmith chat`, the server's
        chat completions."""
        from threading import Thread

        from transformers import TextIteratorStreamer

        from ..modalities.conversations import input_conversation

        conv = input_conversation(messages, 0)
        ids = torch.tensor([self._prompt_ids(conv, "the conversation")], dtype=torch.long)
        gc = copy.deepcopy(self.generation_config)
        if max_new_tokens:
            gc.max_new_tokens = int(max_new_tokens)
        if temperature:
            gc.do_sample, gc.temperature = True, float(temperature)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        lm = unwrap(model).backbone.encoder
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc, streamer=streamer)
        worker = Thread(target=torch.no_grad()(lm.generate), kwargs=kwargs, daemon=True)
        worker.start()
        yield from streamer
        worker.join()

    @torch.no_grad()
    def evaluate(
        self, model, rows: Sequence[dict], batch_size: int, autocast, tracked_only: bool = False
    ) -> EvalOutput:
        """Where rows carry replies: the loss per loss-bearing token, its perplexity, and (unless
        `tracked_only`) the generation scores of the first chat.eval_generations rows (predictions: their
        replies, "" for the rest).
        Rows to answer: every reply generated."""
        from ..data.batching import eval_batches

        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        if "labels" not in rows[0]:
            with autocast():
                gens = self.generate(model, [r["prompt_ids"] for r in rows])
            model.train(was_training)
            return EvalOutput({}, [g[0] for g in gens])
        per_row = []  # (summed token loss, tokens) per conversation: the loss, and its interval
        for idx in eval_batches([r["length"] for r in rows], batch_size):
            # padded, one conversation per row, whatever chat.packing says (same loss: tested), so each
            # conversation's share is known
            batch = {
                k: v.to(device)
                for k, v in collate_padded([rows[i] for i in idx], int(self.tokenizer.pad_token_id)).items()
            }
            with autocast():
                logits = model({**batch, "logits_to_keep": positions_to_keep(batch["labels"])})
            sums, counts = row_losses(logits, batch["labels"])
            per_row += zip(sums.tolist(), counts.tolist())
        loss_sum, tokens = sum(x for x, _ in per_row), int(sum(n for _, n in per_row))
        # training's per-epoch check reads the loss alone: replies are generated before and after training
        k = 0 if tracked_only else min(int(self.options.get("eval_generations", 8)), len(rows))
        with autocast():
            gens = self.generate(model, [r["prompt_ids"] for r in rows[:k]]) if k else []
        model.train(was_training)
        loss = loss_sum / max(tokens, 1)
        metrics: dict[str, Any] = {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "tokens": tokens,
            "n": len(rows),
        }
        if not tracked_only:  # bootstrap over conversations (evaluation/intervals.py)
            from ..evaluation.intervals import bootstrap, exp_ratio, ratio

            metrics["intervals"] = {"loss": bootstrap(per_row, ratio), "perplexity": bootstrap(per_row, exp_ratio)}
        if gens:
            metrics.update(self.generation_scores(gens, [r["reference"] for r in rows[:k]]))
            metrics["sample_replies"] = [g[0] for g in gens[:SAMPLES_SHOWN]]  # to set beside another model's
        return EvalOutput(metrics, [g[0] for g in gens] + [""] * (len(rows) - k))

    def generation_scores(self, gens: Sequence[tuple[str, int, bool]], references: Sequence[str]) -> dict[str, Any]:
        import sacrebleu

        texts = [g[0] for g in gens]
        return {
            "generated": len(gens),
            "stop_rate": sum(g[2] for g in gens) / len(gens),
            "reply_tokens": sum(g[1] for g in gens) / len(gens),
            "distinct_2": distinct_2(texts),
            "chrf": float(sacrebleu.corpus_chrf(texts, [list(references)]).score),
        }

    def decode(self, ev: EvalOutput) -> list[dict[str, Any]]:
        return [{"text": t} for t in ev.predictions]

    # -- extra evaluations, what people read -------------------------------------------------------
    def describe_evaluation(self, examples, ev: EvalOutput, before: dict | None = None) -> dict[str, Any]:
        return {"samples": self._samples(examples, ev, before)}

    def _samples(self, examples, ev: EvalOutput, before: dict | None) -> list[dict[str, str]]:
        """The first generated replies beside the conversations' own and, where the untouched model was
        scored on the same rows, its reply (rows without a reply generated are not shown)."""
        out = []
        shown = min(SAMPLES_SHOWN, int(ev.metrics.get("generated", len(ev.predictions))))
        earlier = (before or {}).get("sample_replies") or []
        for i, text in enumerate(ev.predictions[:shown]):
            if i >= len(examples.conversations):
                break
            conv = examples.conversations[i]
            prompt = prompt_of(conv)
            ask = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
            ref = conv[len(prompt)]["content"] if len(prompt) < len(conv) else ""
            sample = {"prompt": ask, "reference": ref, "reply": text}
            if i < len(earlier):
                sample["before"] = earlier[i]
            out.append(sample)
        return out

    def summarise(self, examples: dict, evals: dict, before: dict, cfg) -> tuple[dict[str, Any], list[str]]:
        extra: dict[str, Any] = {"before_finetuning": before, "length_cuts": dict(self.cut)}
        ev = evals.get("validation")
        if ev is not None:
            extra["samples"] = self._samples(examples["validation"], ev, (before or {}).get("validation"))
        warnings = []
        if evals.get("guard") is not None and (before or {}).get("guard"):
            extra["guard"], msg = self.guard_check(cfg.data.guard, before["guard"], evals["guard"].metrics)
            warnings += [msg] if msg else []
        b = (before or {}).get("validation")
        if b and ev is not None and ev.metrics["loss"] >= b["loss"]:
            warnings.append(
                f"NO BETTER THAN THE UNTOUCHED MODEL: validation loss {ev.metrics['loss']:.4f} after fine-tuning, "
                f"{b['loss']:.4f} before; try another learning rate, more epochs, or more data"
            )
        return extra, warnings

    def guard_check(self, source: str, before: dict, after: dict) -> tuple[dict[str, Any], str | None]:
        """Forgetting on the guard set: (summary for metrics.json, warning or None)."""
        limit = float(self.options.get("guard_max_loss_increase", 0.1))
        rise = after["loss"] - before["loss"]
        summary = {
            "source": source,
            "loss_before": before["loss"],
            "loss_after": after["loss"],
            "loss_increase": rise,
            "max_loss_increase": limit,
            "forgetting": rise > limit,
            "before": before,
            "after": after,
        }
        if rise <= limit:
            return summary, None
        return summary, (
            f"guard set {source}: loss per assistant token rose from {before['loss']:.4f} to {after['loss']:.4f} "
            f"(+{rise:.4f}, more than chat.guard_max_loss_increase={limit:g}): the model is forgetting general "
            "conversation. Lower train.lr, train fewer epochs, keep strategy lora, or mix general conversations "
            "into the training data."
        )

    def headline(self, metrics: dict[str, Any]) -> str:
        from ..evaluation.card_helpers import with_ci

        val, test, guard = metrics["validation"], metrics.get("test"), metrics.get("guard")
        before = (metrics.get("before_finetuning") or {}).get("validation")
        gen = f", stop rate {val['stop_rate']:.2f}, chrF {val['chrf']:.1f}" if "chrf" in val else ""
        return (
            (f"validation loss {before['loss']:.4f} -> " if before else "validation loss ")
            + f"{val['loss']:.4f} (perplexity {with_ci(val, 'perplexity', 2)}){gen}"
            + (f"; test loss {test['loss']:.4f}" if test else "")
            + (f"; guard loss {guard['loss_before']:.4f} -> {guard['loss_after']:.4f}" if guard else "")
        )

    @classmethod
    def summary_lines(cls, m: dict[str, Any]) -> list[str]:
        from ..evaluation.card_helpers import with_ci

        lines = [
            f"loss {with_ci(m, 'loss')}   perplexity {with_ci(m, 'perplexity', 2)}   n={m['n']} conversations   "
            "([95% CI])"
        ]
        if "chrf" in m:
            lines.append(
                f"generated {m['generated']} replies: stop rate {m['stop_rate']:.2f}, {m['reply_tokens']:.1f} tokens "
                f"on average, distinct-2 {m['distinct_2'] if m['distinct_2'] is None else round(m['distinct_2'], 3)}, "
                f"chrF {m['chrf']:.1f}"
            )
        base = m.get("base_model")
        if base:
            lines.append(
                f"before fine-tuning (the base model on the same conversations): loss {base['loss']:.4f}   "
                f"perplexity {base['perplexity']:.2f}"
            )
        for s in m.get("samples") or []:
            lines.append(f"  > {s['prompt']}\n    reference: {s['reference']}")
            if "before" in s:
                lines.append(f"    before:    {s['before']}")
            lines.append(f"    reply:     {s['reply']}")
        return lines

    def format_prediction(self, r: dict[str, Any]) -> str:
        return r["text"]

    def report_sections(self, metrics: dict, examples: dict, evals: dict) -> tuple[list[str], list[str]]:
        from ..evaluation.chat_report import report_sections

        return report_sections(metrics)

    def card_sections(self, out: Path, cfg, metrics: dict) -> CardSections:
        from ..evaluation.chat_report import card_sections

        return card_sections(out, cfg, metrics)

    def onnx_graphs(self, model, rows: Sequence[dict]) -> list:
        from ..errors import ExportError

        raise ExportError(
            "chat runs have no ONNX export: answering streams tokens from a decoder with a key/value cache "
            "and a sampler, which tunesmith runs in PyTorch. Serve the run itself (`tunesmith serve RUN`: "
            "OpenAI-compatible chat completions), or `tunesmith export RUN --merge` for a plain transformers "
            "checkpoint that LLM runtimes' own converters take"
        )

    # -- parity with transformers.pipeline ------------------------------------------------------
    def parity_view(self, ev: EvalOutput) -> list[dict[str, str]]:
        return [{"text": t} for t in ev.predictions]

    def from_pipeline(self, outputs: list) -> list[dict[str, str]]:
        """text-generation on messages answers the conversation with the assistant's message appended."""
        texts = []
        for o in outputs:
            o = o[0] if isinstance(o, list) else o
            gen = o["generated_text"]
            texts.append((gen[-1]["content"] if isinstance(gen, list) else gen).strip())
        return [{"text": t} for t in texts]

    def output_difference(self, ours: list[dict], theirs: list[dict]) -> float:
        """How many replies differ."""
        return float(sum(a["text"] != b["text"] for a, b in zip(ours, theirs)))

    @classmethod
    def tiny_example(cls, root: Path) -> TaskExample:
        from ..testing import chat_rows, make_tiny_causal_lm, write_jsonl

        return TaskExample(
            make_tiny_causal_lm(root / "tiny-llama"),
            write_jsonl(root / "chat" / "train.jsonl", chat_rows(24, seed=1)),
            write_jsonl(root / "chat" / "val.jsonl", chat_rows(8, seed=2, ask="Which colour has the {}?")),
            {"chat": {"max_new_tokens": 6, "eval_generations": 4}, "model": {"max_length": 96}},
        )
