"""Speech recognition: audio -> text, for Whisper (encoder-decoder) and wav2vec2-style (CTC) models.

Whisper labels. A Whisper decoder reads a prompt before the text: <|startoftranscript|>, then for
multilingual checkpoints the language and task tokens (<|de|> <|transcribe|>), then
<|notimestamps|>; English-only checkpoints (*.en) have no language or task tokens. The prompt is
built from the model's own generation config (the ids `generate()` will force), so training and
decoding agree by construction. Teacher forcing feeds  prompt + text  and predicts  text + <|endoftext|>
(the one-token shift transformers' Whisper does with `shift_tokens_right`, done explicitly here so
<|startoftranscript|> is never doubled); the prompt positions and the padding are -100, so the loss
is the transcript alone. Text is tokenised with a leading space, as Whisper was trained and writes.

CTC labels. A character vocabulary is built from the training transcripts (lower-cased; space is
the word delimiter "|", <pad> is the CTC blank); it is saved with the run as vocab.json and a
Wav2Vec2CTCTokenizer, so `pipeline` decodes exactly as we do (greedy: best class per frame,
repeats merged, blanks dropped).

Evaluation transcribes by batched greedy decoding (Whisper: beam search with speech.num_beams) and
scores WER/CER with jiwer after the model's text normaliser (evaluation/speech_metrics.py).
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..modalities.audio import window_card_line, window_hint
from . import TASKS
from .base import CardSections, EvalOutput, TaskDefaults, TaskExample, unwrap
from .speech_onnx import OnnxWhisper

CHUNK = 32  # clips per feature-extractor call
PAD_LABEL = -100


def language_token(language: str, lang_to_id: dict[str, int]) -> str:
    """'de', 'german' or '<|de|>' -> '<|de|>', checked against the model's own language tokens."""
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    lang = language.strip().lower()
    if lang.startswith("<|") and lang.endswith("|>"):
        token = lang
    else:
        token = f"<|{TO_LANGUAGE_CODE.get(lang, lang)}|>"
    if token not in lang_to_id:
        known = ", ".join(sorted(t[2:-2] for t in lang_to_id)[:30])
        raise ConfigError(
            f"speech.language {language!r}: this model has no language token {token}; "
            f"it knows: {known}{' ...' if len(lang_to_id) > 30 else ''}"
        )
    return token


def whisper_generation(
    generation_config, options: dict[str, Any], decoder_positions: int | None = None
) -> tuple[Any, list[int], str, int]:
    """(generation config for this run's decoding: greedy, or beam search with speech.num_beams;
    decoder prompt ids, language code, decoder positions)."""
    gc = copy.deepcopy(generation_config)
    multilingual = bool(getattr(gc, "is_multilingual", False) and getattr(gc, "lang_to_id", None))
    prompt = [int(gc.decoder_start_token_id)]
    language = options.get("language")
    if multilingual:
        token = language_token(language or getattr(gc, "language", None) or "en", gc.lang_to_id)
        task = options.get("task") or "transcribe"
        gc.language, gc.task = token[2:-2], task
        prompt += [int(gc.lang_to_id[token]), int(gc.task_to_id[task])]
        language = token[2:-2]
    else:
        if language is not None and language.strip().lower() not in ("en", "english", "<|en|>"):
            raise ConfigError(
                f"speech.language {language!r}: this Whisper checkpoint is English-only (*.en: it "
                "has no language tokens); use a multilingual one (e.g. whisper-base) for other languages"
            )
        if options.get("task") not in (None, "transcribe"):
            raise ConfigError("speech.task: an English-only Whisper only transcribes; remove speech.task")
        language = "en"
    if getattr(gc, "no_timestamps_token_id", None) is not None:
        prompt.append(int(gc.no_timestamps_token_id))
    gc.return_timestamps = False
    gc.num_beams, gc.do_sample = int(options.get("num_beams") or 1), False
    # The length limit is max_new_tokens alone (a max_length beside it only draws a warning per call).
    positions = int(decoder_positions or getattr(gc, "max_length", None) or 448)
    gc.max_length = None
    gc.max_new_tokens = int(options.get("max_new_tokens") or 128)
    if len(prompt) + gc.max_new_tokens > positions:
        raise ConfigError(
            f"speech.max_new_tokens {gc.max_new_tokens}: with the {len(prompt)}-token prompt it exceeds "
            f"the decoder's {positions} positions; use at most {positions - len(prompt)}"
        )
    return gc, prompt, language, positions


def build_ctc_vocab(transcripts: Sequence[str]) -> dict[str, int]:
    """<pad> (the CTC blank, id 0), <unk>, "|" (word delimiter), then every character seen, sorted."""
    chars = sorted({c for t in transcripts for c in t.lower() if not c.isspace()} - {"|"})
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2}
    for c in chars:
        vocab[c] = len(vocab)
    return vocab


def ctc_tokenizer(vocab: dict[str, int]):
    from transformers import Wav2Vec2CTCTokenizer

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "vocab.json"
        path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        # do_lower_case=False: transformers' flag means "the vocabulary is upper case" (it upper-cases the
        # input); ours is lower case and transcripts are lower-cased before tokenising (_label_ids).
        return Wav2Vec2CTCTokenizer(
            str(path),
            unk_token="<unk>",
            pad_token="<pad>",
            word_delimiter_token="|",
            bos_token=None,
            eos_token=None,
            do_lower_case=False,
        )


@TASKS.register("speech-recognition")
class SpeechRecognitionTask(TaskDefaults):
    name = "speech-recognition"
    modality = "speech"
    pipeline_task = "automatic-speech-recognition"
    output = "text"
    output_keys = ("text",)
    metrics_tracked = ("loss", "wer", "cer")
    default_metric = "wer"
    lower_is_better = frozenset({"loss", "wer", "cer"})
    display_names = {"loss": "loss", "wer": "WER", "cer": "CER"}
    pooled_features = False  # a recogniser's decoder needs the whole sequence: no head-only, no auto
    extra_splits = ("guard",)  # general speech scored before and after: the forgetting check
    config_sections = frozenset({"speech", "model.window_seconds", "data.guard"})
    merge_adapters_on_save = True  # a recogniser is useful to others as a plain checkpoint pipeline() loads
    compares_with_base = True  # `evaluate` scores the model as shipped too (--no-base skips it)
    labels: list[str] = []
    pipeline_kwargs: dict[str, Any] = {}

    def __init__(
        self,
        kind: str,
        processor,
        options: dict[str, Any],
        dropout: float = 0.0,
        generation_config=None,
        decoder_positions: int | None = None,
    ):
        self.kind = kind
        self.processor = processor
        self.preprocessor = processor
        self.tokenizer = processor.tokenizer
        self.feature_extractor = processor.feature_extractor
        self.dropout = dropout
        self.options = dict(options)
        self.label2id: dict[str, int] = {}
        if kind == "seq2seq":
            self.generation_config, self.prompt_ids, self.language, self.decoder_positions = whisper_generation(
                generation_config, options, decoder_positions
            )
        else:
            self.generation_config, self.prompt_ids = None, []
            self.language = options.get("language")
            self.decoder_positions = None
        english = (self.language or "").lower() in ("en", "english")
        self.normaliser = "english" if english else "basic"
        from ..evaluation.speech_metrics import text_normaliser

        self.normalise = text_normaliser(self.normaliser, self.tokenizer)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def backbone_options(cls, cfg) -> dict[str, Any]:
        return cfg.speech.model_dump()  # SpecAugment settings, which the model config holds

    @classmethod
    def from_data(cls, backbone, processor, train, cfg, reporter=None) -> SpeechRecognitionTask:
        """The task for a new run: Whisper's processor as is; for CTC a character tokenizer from the
        training transcripts."""
        # the window rides along in the task's options for its messages (the model itself carries it)
        options = {**cfg.speech.model_dump(), "window_seconds": cfg.model.window_seconds}
        if reporter is not None:
            extractor = processor.feature_extractor if backbone.kind == "seq2seq" else processor
            window_hint(extractor, cfg.model.window_seconds, train.seconds, reporter)
        if backbone.kind == "seq2seq":
            return cls(
                "seq2seq",
                processor,
                options,
                cfg.train.dropout,
                backbone.encoder.generation_config,
                int(backbone.config.max_target_positions),
            )
        from transformers import Wav2Vec2Processor

        if int(options.get("num_beams") or 1) > 1:
            raise ConfigError(
                f"speech.num_beams {options['num_beams']}: beam search is for Whisper-style models; "
                "a CTC model decodes greedily here (best character per frame). Remove speech.num_beams"
            )
        tokenizer = ctc_tokenizer(build_ctc_vocab(train.texts))
        return cls(
            "ctc", Wav2Vec2Processor(feature_extractor=processor, tokenizer=tokenizer), options, cfg.train.dropout
        )

    @classmethod
    def from_saved(cls, folder: Path, meta: dict[str, Any], preprocessor=None) -> SpeechRecognitionTask:
        from transformers import GenerationConfig, Wav2Vec2Processor, WhisperProcessor

        state = meta.get("task_state") or meta["speech"]  # "speech": folders written before task_state
        dropout = state.get("dropout", meta.get("dropout", 0.0))
        if state["kind"] == "seq2seq":
            processor = WhisperProcessor.from_pretrained(folder, local_files_only=True)
            return cls(
                "seq2seq",
                processor,
                state["options"],
                dropout,
                GenerationConfig.from_pretrained(folder),
                state.get("decoder_positions"),
            )
        return cls("ctc", Wav2Vec2Processor.from_pretrained(folder, local_files_only=True), state["options"], dropout)

    def state(self) -> dict[str, Any]:
        """What tunesmith.json keeps to rebuild this task (the processor files hold the rest)."""
        return {
            "kind": self.kind,
            "options": self.options,
            "language": self.language,
            "decoder_positions": self.decoder_positions,
            "dropout": self.dropout,
            "prompt_ids": self.prompt_ids,
            "normaliser": self.normaliser,
        }

    @classmethod
    def split_key(cls, examples) -> None:
        return None  # transcripts, not classes: a plain random split

    @classmethod
    def check_splits(cls, train, validation, test, preflight) -> None:
        check_speech_splits(train, validation, preflight)

    def build_head(self, backbone: nn.Module) -> nn.Module:
        """Whisper: the decoder's final layer norm, moved out into the head, with this run's decoding
        settings on the model (where `generate()` and a saved folder read them). CTC: a new linear
        layer over the character vocabulary."""
        if self.kind == "seq2seq":
            backbone.encoder.generation_config = copy.deepcopy(self.generation_config)
            return backbone.take_head()
        from ..models.speech_backbone import CtcHead

        self.set_conv_geometry(backbone.config)
        return CtcHead(backbone.feature_dim, len(self.tokenizer), self.dropout)

    def config_entries(self) -> dict[str, Any]:
        return {} if self.kind == "seq2seq" else {"pad_token_id": self.tokenizer.pad_token_id}

    def save_preprocessing(self, folder: Path) -> None:
        self.processor.save_pretrained(folder)
        # transformers 5 keeps the feature extractor in processor_config.json; older loaders and other tools
        # read preprocessor_config.json, so write that too.
        self.feature_extractor.save_pretrained(folder)
        if self.generation_config is not None:
            self.generation_config.save_pretrained(folder)

    def before_model(self, fresh, base_dir: Path, model_cfg):
        """Whisper: the pre-trained model as shipped, at its own window (not a shortened model nobody
        has trained yet). CTC: the run's own model before training (fresh), whose character head is
        new: in `evaluate` (no fresh model) there is nothing to compare with."""
        if self.kind == "ctc":
            return fresh
        if fresh is not None and model_cfg.window_seconds is None:
            return fresh
        from ..models.speech_backbone import WhisperBackbone
        from .base import TaskModel

        backbone, _ = WhisperBackbone.load(base_dir, model_cfg.model_copy(update={"window_seconds": None}))
        return TaskModel(backbone, self.build_head(backbone)).eval()

    # -- data ------------------------------------------------------------------------------------
    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    def _label_ids(self, text: str, name: str) -> list[int]:
        if self.kind == "seq2seq":
            ids = self.tokenizer(" " + text.strip(), add_special_tokens=False).input_ids
            limit = self.decoder_positions
            if len(self.prompt_ids) + len(ids) + 1 > limit:
                raise DataError(
                    f"{name}: transcript is {len(ids)} tokens; with the decoder prompt and "
                    f"<|endoftext|> it exceeds the model's {limit} decoder positions. Cut the clip "
                    "and its transcript into shorter pieces."
                )
            return ids + [int(self.tokenizer.eos_token_id)]
        ids = self.tokenizer(" ".join(text.lower().split())).input_ids
        if not ids:
            raise DataError(f"{name}: transcript has no characters to learn")
        return ids

    def encode(self, ex, augment: bool = False, reporter=None) -> list[dict]:
        """One row per clip: features computed once (training epochs only stack them), label ids
        when the examples carry transcripts, and the reference text for scoring. (SpecAugment, the
        training-time augmentation, happens inside the model.)"""
        from ..data.audio import load_audio
        from ..modalities.audio import model_max_seconds, split_mel

        rate = self.sampling_rate
        window = model_max_seconds(self.feature_extractor) if self.kind == "seq2seq" else None
        rows: list[dict] = []
        bar = reporter.bar("preprocess audio", len(ex)) if reporter is not None else contextlib.nullcontext()
        with bar as b:
            for start in range(0, len(ex), CHUNK):
                names = ex.names[start : start + CHUNK]
                waves = [load_audio(item, name, rate) for item, name in zip(ex.items[start : start + CHUNK], names)]
                for w, name in zip(waves, names):
                    if window is not None and len(w) / rate > window + 1e-6:
                        chosen = self.options.get("window_seconds")
                        how = (
                            f"Raise model.window_seconds (now {chosen}; up to the model's own window) or cut it"
                            if chosen
                            else "Cut it"
                        )
                        raise DataError(
                            f"{name}: clip is {len(w) / rate:.1f} s; this model hears at most {window:g} s "
                            f"at a time. {how} into shorter clips (with their transcripts)."
                        )
                if self.kind == "seq2seq":
                    fe = self.feature_extractor(
                        waves, sampling_rate=rate, return_tensors="np", return_attention_mask=True
                    )
                    for mel, mask, w in zip(fe["input_features"], fe["attention_mask"], waves):
                        compact, fill = split_mel(mel, len(w), self.feature_extractor.hop_length)
                        rows.append(
                            {"mel": compact, "mel_fill": fill, "frames": int(mask.sum()), "length": int(mask.sum())}
                        )
                else:
                    for w in waves:
                        values = self.feature_extractor(w, sampling_rate=rate, return_tensors="np").input_values[0]
                        rows.append(
                            {
                                "input_values": torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)),
                                "length": len(values),
                            }
                        )
                if b is not None:
                    b.advance(len(waves))
        for i, r in enumerate(rows):
            r["name"] = ex.names[i]
            if ex.texts is not None:
                r["text"] = ex.texts[i]
                r["labels"] = self._label_ids(ex.texts[i], ex.names[i])
                if self.kind == "ctc":
                    self._check_ctc_length(r)
        return rows

    def _check_ctc_length(self, row: dict) -> None:
        """CTC needs at least one output frame per label character (plus one between repeats)."""
        frames = row["length"]
        for k, s in zip(self._conv_kernel, self._conv_stride):
            frames = (frames - k) // s + 1
        labels = row["labels"]
        need = len(labels) + sum(1 for a, b in zip(labels, labels[1:]) if a == b)
        if frames < need:
            raise DataError(
                f"{row['name']}: clip gives {frames} CTC frames but its transcript needs {need}; the clip "
                "is too short for what it says (check the transcript belongs to this clip)"
            )

    _conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    _conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)

    def set_conv_geometry(self, config) -> None:
        """The CTC encoder's frame rate (its convolution kernels and strides), for the length check."""
        self._conv_kernel, self._conv_stride = tuple(config.conv_kernel), tuple(config.conv_stride)

    def collate(self, rows: Sequence[dict[str, Any]], frames: int | None = None) -> dict[str, torch.Tensor]:
        """frames (Whisper): the window to pad to, if not the feature extractor's (a base model as
        shipped hears its own window, which model.window_seconds may have shortened for the run)."""
        if self.kind == "seq2seq":
            n_frames = int(frames or self.feature_extractor.nb_max_frames)
            n_mels = rows[0]["mel"].shape[0]
            feats = torch.empty((len(rows), n_mels, n_frames), dtype=torch.float32)
            mask = torch.zeros((len(rows), n_frames), dtype=torch.long)
            for i, r in enumerate(rows):
                k = r["mel"].shape[1]
                feats[i, :, :k] = r["mel"]
                feats[i, :, k:] = r["mel_fill"]
                mask[i, : r["frames"]] = 1
            batch = {"input_features": feats, "frame_mask": mask}
            if "labels" in rows[0]:
                longest = max(len(r["labels"]) for r in rows)
                p = len(self.prompt_ids)
                width = p - 1 + longest
                pad = int(self.tokenizer.eos_token_id)
                dec = torch.full((len(rows), width), pad, dtype=torch.long)
                labels = torch.full((len(rows), width), PAD_LABEL, dtype=torch.long)
                for i, r in enumerate(rows):
                    seq = self.prompt_ids + r["labels"]  # prompt, text, <|endoftext|>
                    dec[i, : len(seq) - 1] = torch.tensor(seq[:-1])
                    labels[i, p - 1 : len(seq) - 1] = torch.tensor(r["labels"])
                batch.update(decoder_input_ids=dec, labels=labels)
            return batch
        longest = max(r["input_values"].shape[0] for r in rows)
        values = torch.zeros((len(rows), longest), dtype=torch.float32)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, r in enumerate(rows):
            n = r["input_values"].shape[0]
            values[i, :n] = r["input_values"]
            mask[i, :n] = 1
        batch = {"input_values": values, "attention_mask": mask}
        if "labels" in rows[0]:
            longest = max(len(r["labels"]) for r in rows)
            labels = torch.full((len(rows), longest), PAD_LABEL, dtype=torch.long)
            for i, r in enumerate(rows):
                labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
            batch["labels"] = labels
        return batch

    # -- training / evaluation -------------------------------------------------------------------
    def compute_loss(self, model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Token cross-entropy (Whisper) or CTC loss (encoders), in fp32 and ignoring padding. The
        logits come from `model(batch)`, through whatever wraps the TaskModel (DDP, accelerate's
        autocast), like every other task's."""
        import torch.nn.functional as F

        if self.kind == "seq2seq":
            return self._seq2seq_loss(model(batch), batch)
        raw = unwrap(model)  # DDP wraps the TaskModel
        logits = model(batch)
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        input_lengths = raw.backbone.frame_lengths(batch["attention_mask"])
        labels = batch["labels"]
        valid = labels >= 0
        loss = F.ctc_loss(
            log_probs,
            labels[valid],
            input_lengths,
            valid.sum(-1),
            blank=int(self.tokenizer.pad_token_id),
            reduction="mean",
            zero_infinity=True,
        )
        return {"loss": loss, "logits": logits}

    @staticmethod
    def _seq2seq_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Teacher-forced token cross-entropy over the transcript tokens (prompt and padding are -100)."""
        import torch.nn.functional as F

        loss = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=PAD_LABEL)
        return {"loss": loss, "logits": logits}

    @torch.no_grad()
    def transcribe_batch(self, model, batch: dict[str, torch.Tensor], encoder_outputs=None) -> list[str]:
        """Greedy decoding, exactly as `pipeline("automatic-speech-recognition")` does for this folder
        (given `encoder_outputs`, generate() reuses them instead of running the encoder again)."""
        raw = unwrap(model)
        if isinstance(raw, OnnxWhisper):
            hidden = encoder_outputs if encoder_outputs is not None else raw.encode(batch["input_features"])
            ids = raw.greedy(hidden, self.prompt_ids, self.generation_config)
            return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        if self.kind == "seq2seq":
            from transformers.utils import logging as hf_logging

            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # generate() warns per call about its own length defaults
            try:
                extra = {"encoder_outputs": encoder_outputs} if encoder_outputs is not None else {}
                ids = raw.backbone.encoder.generate(
                    input_features=batch["input_features"], attention_mask=batch["frame_mask"], **extra
                )
            finally:
                hf_logging.set_verbosity(verbosity)
            return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        logits = raw.head(raw.backbone.forward_features(batch).to(raw.head_dtype))
        lengths = raw.backbone.frame_lengths(batch["attention_mask"])
        best = logits.argmax(-1).cpu()
        return [self.tokenizer.decode(best[i, : int(n)].tolist()).strip() for i, n in enumerate(lengths)]

    @torch.no_grad()
    def evaluate(
        self, model, rows: Sequence[dict], batch_size: int, autocast, tracked_only: bool = False
    ) -> EvalOutput:
        """Transcripts in input order by batched greedy decoding (beam search with speech.num_beams);
        where rows carry transcripts, the teacher-forced loss, WER/CER after normalisation and the
        per-utterance scores."""
        from ..data.batching import eval_batches
        from ..models.whisper_window import window_frames

        was_training = model.training
        model.eval()
        raw = unwrap(model)
        device = next(model.parameters()).device
        hyps: list[str | None] = [None] * len(rows)
        loss_sum = 0.0
        has_labels = "labels" in rows[0]
        onnx = isinstance(raw, OnnxWhisper)
        frames = (raw.frames if onnx else window_frames(raw.backbone.encoder)) if self.kind == "seq2seq" else None
        if self.kind == "ctc" and not raw.backbone.uses_attention_mask:
            # group-norm encoders see the padding of a batch: one clip at a time, so a clip's transcript
            # never depends on its batch (and matches pipeline(), which also runs clips alone)
            batch_size = 1
        for idx in eval_batches([r.get("length", 1) for r in rows], batch_size):
            batch = {k: v.to(device) for k, v in self.collate([rows[i] for i in idx], frames).items()}
            with autocast():
                encoded = None
                if onnx:  # one encoder pass for both the loss and decoding
                    encoded = raw.encode(batch["input_features"])
                    if has_labels:
                        logits = raw.logits(batch["decoder_input_ids"], encoded)
                        loss_sum += float(self._seq2seq_loss(logits, batch)["loss"]) * len(idx)
                elif has_labels and self.kind == "seq2seq":  # one encoder pass for both the loss and decoding
                    encoded = raw.backbone.encoder.model.encoder(batch["input_features"])
                    loss_sum += float(self._seq2seq_loss(raw.backbone(batch, encoded), batch)["loss"]) * len(idx)
                elif has_labels:
                    loss_sum += float(self.compute_loss(model, batch)["loss"]) * len(idx)
                texts = self.transcribe_batch(model, batch, encoded)
            for j, i in enumerate(idx):
                hyps[i] = texts[j]
        model.train(was_training)
        out_hyps = [h or "" for h in hyps]
        if not has_labels:
            return EvalOutput({}, out_hyps)
        m = self.metrics(out_hyps, [r["text"] for r in rows], keep_details=True)
        per = m.pop("per_utterance")
        m["loss"] = loss_sum / len(rows)
        if not tracked_only:
            from ..evaluation.speech_metrics import speech_intervals

            m["intervals"] = speech_intervals(per)
        return EvalOutput(m, out_hyps, None, per)

    def metrics(
        self, predictions: Sequence[str], references: Sequence[str], keep_details: bool = False
    ) -> dict[str, Any]:
        from ..evaluation.speech_metrics import speech_metrics

        m = speech_metrics(references, predictions, self.normalise)
        if not keep_details:
            m.pop("per_utterance")
        return m

    @classmethod
    def improved(cls, record: dict[str, Any], best: dict[str, Any] | None, metric: str) -> bool:
        if best is not None and metric in ("wer", "cer") and abs(record[metric] - best[metric]) <= 1e-12:
            # Error rates tie often on a small validation set (a few dozen utterances); the lower
            # validation loss breaks the tie rather than the earliest evaluation winning.
            return record["loss"] < best["loss"] - 1e-12
        return super().improved(record, best, metric)

    def decode(self, ev: EvalOutput) -> list[dict[str, Any]]:
        return [{"text": t} for t in ev.predictions]

    def feature_row(self, row: dict, features: torch.Tensor) -> dict:
        raise ConfigError("head-only does not apply to speech-recognition")  # refused by the config first

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return 0  # audio frames, not tokens: utterances/s is the figure here

    # -- extra evaluations: before/after, the guard set, worst utterances ----------------------
    def describe_evaluation(self, examples, ev: EvalOutput, before: dict | None = None) -> dict[str, Any]:
        from ..evaluation.speech_metrics import worst_utterances

        return {"worst_utterances": worst_utterances(examples.names, examples.texts, ev.predictions, ev.details)}

    def summarise(self, examples: dict, evals: dict, before: dict, cfg) -> tuple[dict[str, Any], list[str]]:
        from ..evaluation.speech_metrics import guard_check, worst_utterances

        extra: dict[str, Any] = {"before_finetuning": before, "guard": None}
        warnings: list[str] = []
        if evals.get("guard") is not None:  # catastrophic forgetting: did general speech get worse?
            extra["guard"], msg = guard_check(
                cfg.data.guard, before["guard"], evals["guard"].metrics, cfg.train.guard_max_wer_increase
            )
            warnings += [msg] if msg else []
        extra["worst_utterances"] = {
            split: worst_utterances(examples[split].names, examples[split].texts, ev.predictions, ev.details)
            for split, ev in evals.items()
            if ev is not None
        }
        return extra, warnings

    def headline(self, metrics: dict[str, Any]) -> str:
        val, test, guard = metrics["validation"], metrics.get("test"), metrics.get("guard")
        before = (metrics.get("before_finetuning") or {}).get("validation")
        from ..evaluation.card_helpers import with_ci

        return (f"validation WER {before['wer']:.4f} -> " if before else "validation WER ") + (
            f"{with_ci(val, 'wer')}, CER {with_ci(val, 'cer')}"
            + (f"; test WER {with_ci(test, 'wer')}" if test else "")
            + (f"; guard WER {guard['wer_before']:.4f} -> {guard['wer_after']:.4f}" if guard else "")
        )

    # -- what people read ------------------------------------------------------------------------
    @classmethod
    def summary_lines(cls, m: dict[str, Any]) -> list[str]:
        from ..evaluation.card_helpers import with_ci

        lines = [
            f"WER {with_ci(m, 'wer')}   CER {with_ci(m, 'cer')}   n={m['n']} utterances, {m['words']} words   "
            "([95% CI])"
        ]
        base = m.get("base_model")
        if base:
            lines.append(
                f"before fine-tuning (the base model on the same clips): WER {base['wer']:.4f}   CER {base['cer']:.4f}"
            )
        for x in m["worst_utterances"][:10]:
            lines.append(
                f"  {x['word_errors']} errors  {x['input']}\n    reference:  {x['reference']}\n"
                f"    hypothesis: {x['hypothesis']}"
            )
        return lines

    def format_prediction(self, r: dict[str, Any]) -> str:
        return f"{r['text']}\t{r['input']}"

    def report_sections(self, metrics: dict, examples: dict, evals: dict) -> list[str]:
        from ..evaluation.speech_report import report_sections

        return report_sections(metrics)

    def card_sections(self, out: Path, cfg, metrics: dict) -> CardSections:
        from ..evaluation.speech_report import card_sections

        return card_sections(out, cfg, metrics, window_card_line(out, cfg.model.window_seconds))

    # -- parity with transformers.pipeline ------------------------------------------------------
    def parity_view(self, ev: EvalOutput) -> list[dict[str, str]]:
        return [{"text": t} for t in ev.predictions]

    def from_pipeline(self, outputs: list) -> list[dict[str, str]]:
        return [{"text": o["text"].strip()} for o in outputs]

    def output_difference(self, ours: list[dict], theirs: list[dict]) -> float:
        """How many transcripts differ."""
        return float(sum(a["text"] != b["text"] for a, b in zip(ours, theirs)))

    # -- ONNX export (speech_onnx.py) -----------------------------------------------------------
    def onnx_graphs(self, model, rows: Sequence[dict]) -> list:
        """Whisper: encoder.onnx and decoder.onnx (greedy decoding runs on onnxruntime)."""
        from ..errors import ExportError
        from ..models.onnx_runtime import OnnxGraph
        from ..models.whisper_window import window_frames
        from .speech_onnx import WhisperDecoderGraph, WhisperEncoderGraph

        if self.kind != "seq2seq":
            raise ExportError(
                "ONNX export of CTC recognisers (wav2vec2-style) is not built yet: serve the run folder itself "
                "(tunesmith serve RUN), or export a Whisper run"
            )
        if int(self.generation_config.num_beams or 1) > 1:
            raise ExportError(
                f"speech.num_beams {self.generation_config.num_beams}: the ONNX export decodes greedily, so its "
                "transcripts would differ from the run's; export a run decoded greedily (speech.num_beams 1)"
            )
        whisper = unwrap(model).backbone.encoder
        features = self.collate(rows, window_frames(whisper))["input_features"]
        with torch.no_grad():
            hidden = whisper.model.encoder(features).last_hidden_state
        ids = torch.tensor([self.prompt_ids + [int(self.tokenizer.eos_token_id)]] * len(rows))  # >1 token: dynamic
        return [
            OnnxGraph(  # mels and frames static: the window is the position table's, fixed for the run
                "encoder",
                WhisperEncoderGraph(whisper),
                {"input_features": features},
                ("last_hidden_state",),
                static_axes={"input_features": (1, 2)},
            ),
            OnnxGraph(
                "decoder",
                WhisperDecoderGraph(whisper),
                {"decoder_input_ids": ids, "encoder_hidden_states": hidden},
                ("logits",),
            ),
        ]

    def onnx_model(self, sessions: dict) -> nn.Module:
        return OnnxWhisper(sessions)

    @torch.no_grad()
    def onnx_parity(self, model, onnx_model, rows: Sequence[dict], batch_size: int) -> dict[str, Any]:
        """Transcripts (greedy, both ways) and the decoder's teacher-forced logits over the reference
        transcripts (the prompt alone where rows have none)."""
        from ..data.batching import eval_batches

        ref = self.evaluate(model, rows, batch_size, contextlib.nullcontext)
        got = self.evaluate(onnx_model, rows, batch_size, contextlib.nullcontext)
        raw = unwrap(model)
        diff = 0.0
        for idx in eval_batches([r.get("length", 1) for r in rows], batch_size):
            batch = self.collate([rows[i] for i in idx], onnx_model.frames)
            ids = batch.get("decoder_input_ids", torch.tensor([self.prompt_ids] * len(idx)))
            theirs = onnx_model.logits(ids, onnx_model.encode(batch["input_features"]))
            ours = raw.backbone({**batch, "decoder_input_ids": ids})
            diff = max(diff, float((ours.float() - theirs.float()).abs().max()))
        same = [a == b for a, b in zip(ref.predictions, got.predictions)]
        agreement = float(np.mean(same))
        return {"max_abs_logit_diff": diff, "agreement": agreement, "pytorch": ref.metrics, "onnx": got.metrics}

    @classmethod
    def tiny_example(cls, root: Path) -> TaskExample:
        from ..testing import SENTENCES, make_asr_whisper, write_speech_table

        return TaskExample(
            make_asr_whisper(root / "tiny-asr-whisper"),
            write_speech_table(root / "speech", SENTENCES * 2, "train.csv"),
            write_speech_table(root / "speech", SENTENCES[:4], "val.csv", seed=50),
            {"data": {"text_column": "transcript", "audio_column": "audio"}, "speech": {"max_new_tokens": 6}},
        )


def check_speech_splits(train, val, report) -> None:
    """Speech counterpart of the classification cross-set checks: the same clip in training and
    validation makes validation WER optimistic."""
    from ..data.preflight import warn_of_leaks

    warn_of_leaks(train, val, report, "clips", "WER")
