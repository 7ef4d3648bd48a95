"""Typed, validated run configuration.

A RunConfig is built once from YAML, CLI flags and dotted ``--set`` overrides, validated in one
place, and saved into the run folder. Every field carries its help text; the CLI's config
reference (``tunesmith config-help``) is generated from these descriptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _TaskOptions(_Section):
    """A section only some tasks read; setting it for another task is a config error (each task
    declares the options it reads in `config_sections`)."""


# A single field only some tasks read: the same check, for one key.
_TASK_OPTION = {"task_option": True}


class DataConfig(_Section):
    train: str | None = Field(
        None,
        description="Training data: a .csv, .tsv, .jsonl/.json or .parquet file; for images and audio also a "
        "folder with one sub-folder of images (clips) per class.",
    )
    validation: str | None = Field(
        None, description="Validation file. When absent, a stratified split of the training data is held out."
    )
    test: str | None = Field(None, description="Optional test file, scored once with the final (best) model.")
    text_column: str = Field("text", description="Column holding the input text.")
    text_pair_column: str | None = Field(
        None, description="Optional second text column for sentence-pair tasks (NLI, paraphrase)."
    )
    label_column: str = Field("label", description="Column holding the label; labels are kept as strings.")
    image_column: str = Field(
        "image", description="Images: column holding an image path (relative to the table's folder) or image bytes."
    )
    skip_bad_images: bool = Field(
        False,
        description="Images: skip unreadable images instead of stopping; they are counted and listed in the report.",
    )
    audio_column: str = Field(
        "audio",
        description="Audio: column holding a clip's path (relative to the table's folder) or its encoded "
        "bytes (WAV, FLAC, OGG, MP3 where libsndfile has it).",
    )
    skip_bad_audio: bool = Field(
        False,
        description="Audio: skip missing, unreadable, empty, silent or too-long clips instead of stopping; "
        "they are counted and listed in the report.",
    )
    max_audio_seconds: float = Field(
        30.0,
        gt=0,
        description="Audio: longest clip accepted, in seconds; longer ones are errors (or skipped with "
        "skip_bad_audio), never cut silently. Whisper models take at most 30 s whatever this says.",
    )
    guard: str | None = Field(
        None,
        json_schema_extra=_TASK_OPTION,
        description="Speech recognition: a guard set (table of clips + transcripts, same columns) of general "
        "speech the model must not forget; chat: general conversations (same formats) the model must not forget. "
        "Scored before and after fine-tuning (report, metrics.json, model card).",
    )
    format: Literal["messages", "sharegpt", "prompt-completion", "alpaca"] | None = Field(
        None,
        json_schema_extra=_TASK_OPTION,
        description="Chat: the conversation format (messages: OpenAI {role, content} lists; sharegpt: "
        "conversations of {from, value}; prompt-completion or alpaca columns). Default: detected from the fields.",
    )
    validation_split: float = Field(
        0.1, gt=0.0, lt=0.9, description="Fraction held out for validation when no validation file is given."
    )
    split_seed: int = Field(13, description="Seed of the stratified validation split.")
    streaming: bool = Field(
        False,
        description="Text: data larger than memory. Tables (.csv, .tsv, .jsonl, .parquet) are read and checked in "
        "batches, tokenised once into a memory-mapped cache on disk (beside the feature cache; a second run on the "
        "same file reads it) and trained from it; only labels stay in memory. Reports show row numbers, not texts.",
    )
    streaming_batch_rows: int = Field(
        10_000, ge=1, description="Rows read (and tokenised) per batch when data.streaming is on."
    )


class ModelConfig(_Section):
    name: str = Field(
        "minilm", description="Catalogue name (see `tunesmith models`) or path to a local HF-format folder."
    )
    pooling: Literal["mean", "cls", "pooler"] | None = Field(
        None,
        description="How token states become one vector. Default: what the model folder declares "
        "(sentence-transformers 1_Pooling/config.json), else the architecture's own pooler.",
    )
    max_length: int = Field(128, ge=8, le=8192, description="Longest input in tokens; longer texts are truncated.")
    trust_remote_code: bool = Field(
        False, description="Run Python code shipped inside the model folder. Off unless you trust the folder."
    )
    from_scratch: bool = Field(
        False,
        description="Train the same architecture from random weights (every layer re-initialised, seeded by "
        "train.seed): the baseline that shows what pre-training buys (`tunesmith curve --from-scratch`).",
    )
    window_seconds: int | None = Field(
        None,
        ge=1,
        json_schema_extra=_TASK_OPTION,
        description="Whisper models (speech-recognition, audio-classification): seconds of audio the "
        "encoder hears at a time (default: the model's own window, 30 s). Every clip is padded to the window, so on "
        "short clips a shorter one runs the encoder several times faster (10 s instead of 30 s: about 3.3x for "
        "whisper-tiny.en, training and decoding). The saved model keeps it (config.json, preprocessor_config.json; "
        "pipeline() included) and refuses longer clips: set it above your longest clip.",
    )


class LoraConfig(_Section):
    rank: int = Field(8, ge=1, le=1024, description="LoRA rank r of each low-rank update.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (the update is scaled by alpha / rank).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] | None = Field(
        None, description="Module names to adapt. Default: peft's per-architecture choice (BERT: query, value)."
    )


class StrategyConfig(_Section):
    name: str = Field(
        "full",
        description="Which weights train: full, head-only, partial, gradual, bitfit, lora, auto (README: Strategies).",
    )
    unfreeze_top: int | None = Field(
        None,
        ge=0,
        description="partial: how many backbone layer groups, counted from the top, train with the head (default 2).",
    )
    unfreeze_every: int | None = Field(
        None, ge=1, description="gradual: epochs between unfreezing one more layer group from the top (default 1)."
    )
    unfreeze_every_steps: int | None = Field(
        None,
        ge=1,
        description="gradual: optimizer steps between unfreezing one more layer group (instead of epochs; "
        "for runs of few, long epochs).",
    )
    lora: LoraConfig | None = Field(None, description="lora: rank, alpha, dropout, target_modules.")
    solver: Literal["lbfgs", "sgd"] | None = Field(
        None,
        description="head-only: lbfgs (default) solves the head to convergence, its L2 strength chosen by "
        "5-fold cross-validation of the held-out loss on the training split (seconds on cached features); sgd "
        "trains it by AdamW epochs (train.epochs, lr and patience apply).",
    )
    head_c: float | None = Field(
        None, gt=0, description="head-only, solver lbfgs: inverse L2 strength C to use instead of cross-validating."
    )
    auto_budget: str | None = Field(
        None,
        description="auto: what the race over candidate strategies may spend: a time (90s, 10m, 1.5h) or a "
        "multiple of its head-only candidate's time (20x). Default: 3 times its first full-length trained candidate.",
    )
    auto_refit: bool | None = Field(
        None,
        description="auto: after the race picks a winner on validation, train the winner's settings again on "
        "training + validation rows together (the epochs at which it scored best; a solved head cross-validated "
        "anew), so the kept model learns from every labelled row. Skipped where the budget has no room for it (one "
        "under 5% of the budget always runs). "
        "Validation scores of a refit model are in-sample; the race's are kept beside them. Default: true.",
    )

    @field_validator("auto_budget")
    @classmethod
    def _budget(cls, v: str | None) -> str | None:
        from .strategies.auto import parse_budget

        parse_budget(v)
        return v

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from .strategies import STRATEGIES

        if v not in STRATEGIES:
            raise ValueError(f"unknown strategy {v!r}; allowed: {', '.join(STRATEGIES.names())}")
        return v


class TrainConfig(_Section):
    epochs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Passes over the training data. Default: the strategy's (3 for full, 50 for head-only) or "
        "the model family's (CNNs 15, text encoders 10), raised on a small set to at least 100 optimizer steps.",
    )
    lr: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Peak learning rate. Default: the model family's for the strategy (full: CNNs 1e-3, text "
        "encoders 2e-5), else the strategy's (full 5e-5, head-only 5e-3).",
    )
    head_lr: float | None = Field(
        None, gt=0, lt=1, description="Learning rate of the new task head (default: 10x lr for full, lr otherwise)."
    )
    batch_size: int = Field(32, ge=1, le=65_536, description="Examples per optimizer step (before accumulation).")
    eval_batch_size: int = Field(64, ge=1, le=65_536, description="Examples per evaluation batch.")
    grad_accum: int = Field(1, ge=1, le=1024, description="Batches accumulated per optimizer step.")
    warmup_ratio: float = Field(
        0.06,
        ge=0,
        lt=1,
        description="Fraction of steps spent warming the LR up from 0. Unless set, the model family's where it "
        "declares one (text encoders and audio models: 0.1).",
    )
    weight_decay: float = Field(0.01, ge=0, lt=1, description="AdamW weight decay (not applied to biases and norms).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip gradients to this global norm (null: off).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout before the task head's linear layer.")
    eval_every: int = Field(
        0, ge=0, description="Evaluate every N optimizer steps; 0 evaluates at the end of each epoch."
    )
    checkpoint_every: int = Field(
        0, ge=0, description="Write a resumable checkpoint every N optimizer steps; 0 writes one per epoch."
    )
    checkpoint_every_minutes: float | None = Field(
        None,
        gt=0,
        description="Also write a checkpoint whenever this many minutes have passed since the last one (long "
        "runs: at most this much work is lost to a crash), beside the steps or epochs of checkpoint_every.",
    )
    early_stopping_patience: int | None = Field(
        3,
        ge=1,
        description="Stop after this many evaluations without improvement (null: never stop early). "
        "Default: 3 (full), 10 (head-only); CNNs 5.",
    )
    metric: str | None = Field(
        None,
        description="Validation metric that picks the best model and drives early stopping, one of those the "
        "task records (classification: accuracy, macro_f1, loss; speech-recognition: wer, cer, loss; loss, wer and "
        "cer: lower is better). Default: the task's own (macro_f1, wer).",
    )
    guard_max_wer_increase: float = Field(
        0.05,
        ge=0,
        description="Speech recognition: warn when WER on the guard set (data.guard) rises by more than "
        "this (absolute, 0.05 = 5 points) from before to after fine-tuning: the model is forgetting general speech.",
    )
    seed: int = Field(42, description="Seed for weights init, dropout and data order; recorded in the run.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="auto: bf16 autocast where it is measurably faster on this machine (a 0.3 s matmul "
        "timing, cached; GPUs: where supported), fp32 elsewhere.",
    )
    length_grouping: bool = Field(
        True,
        description="Batch examples of similar length (less padding), shuffling within windows of "
        "`group_size` batches so batches stay random.",
    )
    group_size: int = Field(8, ge=1, le=1000, description="Batches per length-sorting window.")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: all cores).")
    keep_checkpoints: bool = Field(False, description="Keep resumable checkpoints after a run finishes.")
    keep: Literal["best", "last"] = Field(
        "best",
        description="Which weights the run keeps: best, those of the best validation evaluation; last, those of "
        "the last (a fixed schedule, e.g. auto's refit on training + validation; early stopping never fires).",
    )
    layer_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Layer-wise LR decay: each backbone layer group learns at the LR of the group "
        "above it times this factor (e.g. 0.8). Applies to full, partial and gradual.",
    )
    log_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list,
        description="Experiment trackers that also receive the run's config and every evaluation (accelerate's "
        "trackers): tensorboard (event files in OUT/logs), mlflow (MLFLOW_TRACKING_URI, else a local SQLite store, "
        "OUT/mlflow.db). Needs the `tracking` extra (pip install tunesmith[tracking]). Local files stay the record.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each backbone layer's activations during the backward pass instead of keeping "
        "them: training memory falls to about weights + optimizer state (what lora saves then shows) for ~30% more "
        "compute. Backbones built on a transformers model that supports it; not with head-only.",
    )
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With more than one process: ddp, every process holds the whole model and averages gradients; "
        "fsdp, each holds 1/N of the weights, gradients and optimizer state (FSDP2, every backbone layer sharded), "
        "for models that do not fit one device. One process trains alike with either. fsdp refuses gradual "
        "(its trainable set changes mid-run) and fp16 (use bf16).",
    )


class AugmentConfig(_TaskOptions):
    enabled: bool = Field(True, description="Images: augment training images (never evaluation ones).")
    crop_scale: float = Field(
        0.6, gt=0, le=1, description="Random resized crop: smallest fraction of the image area kept (1: no crop)."
    )
    flip: bool = Field(True, description="Random horizontal flip (turn off where left/right matters, e.g. some scans).")
    color_jitter: float = Field(0.1, ge=0, lt=1, description="Brightness/contrast/saturation jitter strength (0: off).")


class EvalConfig(_TaskOptions):
    calibrate: bool = Field(
        False,
        description="Classification: fit a temperature on the validation split after training and fold it into the "
        "head's weights, so predict, serve and transformers.pipeline all give calibrated scores (labels unchanged). "
        "The report shows ECE and the reliability diagram either way.",
    )


class SpeechConfig(_TaskOptions):
    language: str | None = Field(
        None,
        description="Speech recognition: language of the transcripts (e.g. en, de, german). Multilingual "
        "Whisper: sets the <|language|> prompt token (default: the model's generation config, else en); English-only "
        "(*.en) checkpoints take none. Also picks the WER normaliser (en: Whisper's English normaliser).",
    )
    task: Literal["transcribe", "translate"] = Field(
        "transcribe",
        description="Multilingual Whisper: the task token of the prompt (transcribe, or translate to English).",
    )
    max_new_tokens: int = Field(
        128,
        ge=1,
        le=444,
        description="Speech recognition: longest transcript generated when evaluating and "
        "predicting (greedy decoding; saved in generation_config.json so pipeline() decodes the same).",
    )
    num_beams: int = Field(
        1,
        ge=1,
        le=16,
        description="Whisper: beam search width when evaluating and predicting (1: greedy). Saved in "
        "generation_config.json so pipeline() decodes the same; each beam adds about one greedy decoder's work. CTC "
        "models decode greedily.",
    )
    spec_augment: bool = Field(
        False,
        description="SpecAugment while training: mask random time spans (and feature bands) of the input, "
        "as the model config's apply_spec_augment does; evaluation never masks.",
    )
    mask_time_prob: float = Field(0.05, ge=0, lt=1, description="SpecAugment: share of time steps masked.")
    mask_time_length: int = Field(10, ge=1, description="SpecAugment: length of each time mask, in frames.")
    mask_feature_prob: float = Field(0.0, ge=0, lt=1, description="SpecAugment: share of feature channels masked.")
    mask_feature_length: int = Field(10, ge=1, description="SpecAugment: width of each feature mask, in channels.")


class ChatConfig(_TaskOptions):
    template: str | None = Field(
        None,
        description="Chat: the chat template, for a model without one or to replace its own: chatml (built in; "
        "adds <|im_start|> / <|im_end|> to the tokenizer where missing) or a Jinja file.",
    )
    train_on: Literal["assistant", "all", "last"] = Field(
        "assistant",
        description="Chat: which tokens carry the loss: every assistant reply with the token that ends its turn "
        "(assistant), only the last reply (last), or the whole rendered conversation (all).",
    )
    packing: bool = Field(
        False,
        description="Chat: pack several conversations into each row (up to model.max_length tokens), positions "
        "restarting per conversation and attention never crossing one (transformers' packed-sequence masking): no "
        "padding computed. Same loss and gradients as one conversation per row.",
    )
    guard_max_loss_increase: float = Field(
        0.1,
        ge=0,
        description="Chat: warn when the loss per assistant token on the guard set (data.guard) rises by more than "
        "this (absolute, in nats) from before to after fine-tuning: the model is forgetting general conversation.",
    )
    max_new_tokens: int = Field(
        128,
        ge=1,
        le=8192,
        description="Chat: longest reply generated when evaluating, predicting and chatting (greedy decoding; "
        "saved in generation_config.json so pipeline() generates the same).",
    )
    repetition_penalty: float = Field(
        1.1,
        ge=1.0,
        le=2.0,
        description="Chat: greedy decoding's penalty on tokens already in the conversation (transformers' "
        "repetition_penalty; 1: none), saved in generation_config.json. Plain greedy replies of small models repeat "
        "themselves: on 30 held-out Chit Chat conversations, SmolLM2-135M after LoRA, 1.1 raised chrF from 11.6 "
        "to 14.5, distinct-2 from 0.53 to 0.83 and the stop rate from 0.77 to 0.83 (bench/chat_decoding.py).",
    )
    eval_generations: int = Field(
        8,
        ge=0,
        description="Chat: validation conversations whose last reply is generated before and after training "
        "(not at each epoch's check, which reads the loss), for the stop rate, reply length, repetition and chrF "
        "against the reference (the loss uses them all).",
    )


class RunConfig(_Section):
    task: str = Field(
        "text-classification",
        description="What the model learns: text-classification, image-classification, "
        "audio-classification, speech-recognition or chat.",
    )
    out: str | None = Field(None, description="Run folder: model, report, metrics and checkpoints go here.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        from .tasks import TASKS

        if v not in TASKS:
            raise ValueError(f"unknown task {v!r}; allowed: {', '.join(TASKS.names())}")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        # Cross-field rules live here and nowhere else.
        if self.data.text_pair_column and self.data.text_pair_column == self.data.text_column:
            raise ValueError("data.text_pair_column must differ from data.text_column")
        if self.data.label_column in (self.data.text_column, self.data.text_pair_column):
            raise ValueError("data.label_column must differ from the text column(s)")
        from .tasks import TASKS

        task_cls = TASKS.get(self.task)
        if "name" not in self.strategy.model_fields_set and self.strategy.name != task_cls.default_strategy:
            self.strategy.name = task_cls.default_strategy  # e.g. adapters for a language model
        for key in self._task_options_set():
            if key not in task_cls.config_sections:
                owners = [n for n in TASKS.names() if key in TASKS.get(n).config_sections]
                raise ValueError(
                    f"{key}{'.*' if '.' not in key else ''} applies to {' / '.join(owners)}, "
                    f"not {self.task!r}; remove it"
                )
        if self.train.metric is not None and self.train.metric not in task_cls.metrics_tracked:
            raise ValueError(
                f"train.metric {self.train.metric!r} is not scored by task {self.task!r}; "
                f"use one of {', '.join(task_cls.metrics_tracked)}"
            )
        from .strategies import STRATEGIES

        strategy = STRATEGIES.get(self.strategy.name)
        strategy.check_task(task_cls)
        strategy.check_config(self)
        if self.strategy.unfreeze_every is not None and self.strategy.unfreeze_every_steps is not None:
            raise ValueError("strategy.unfreeze_every (epochs) and strategy.unfreeze_every_steps (steps): set one")
        for option in StrategyConfig.model_fields:
            if option != "name" and getattr(self.strategy, option) is not None and option not in strategy.options:
                owners = [
                    n for n in STRATEGIES.names() if option in STRATEGIES.get(n).options and STRATEGIES.get(n).defaults
                ] or [n for n in STRATEGIES.names() if option in STRATEGIES.get(n).options]  # auto takes them all
                raise ValueError(
                    f"strategy.{option} applies only to strategy {' / '.join(owners)}, "
                    f"not {self.strategy.name!r}; remove it or change strategy.name"
                )
        if self.train.gradient_checkpointing and strategy.uses_feature_cache:
            raise ValueError(
                f"train.gradient_checkpointing does nothing with {self.strategy.name!r} (the backbone "
                "never trains, its features are computed once); remove it"
            )
        if self.train.layer_decay is not None and not strategy.supports_layer_decay:
            owners = [
                n for n in STRATEGIES.names() if STRATEGIES.get(n).supports_layer_decay and STRATEGIES.get(n).defaults
            ]
            raise ValueError(f"train.layer_decay applies to strategies {', '.join(owners)}, not {self.strategy.name!r}")
        return self

    def _task_options_set(self) -> list[str]:
        """The task-specific sections and keys this config sets: "augment", "model.window_seconds", ..."""
        found = []
        for section in type(self).model_fields:
            value = getattr(self, section)
            if isinstance(value, _TaskOptions):
                # a section at its defaults changes nothing (a saved run_config.yaml lists every section)
                if value.model_fields_set and value != type(value)():
                    found.append(section)
            elif isinstance(value, BaseModel):
                found += [
                    f"{section}.{name}"
                    for name, f in type(value).model_fields.items()
                    if f.json_schema_extra == _TASK_OPTION and getattr(value, name) is not None
                ]
        return found

    def resolved(self, backbone_cls=None, n_train: int | None = None) -> RunConfig:
        """Fill strategy-dependent defaults so the saved config says exactly what ran: the strategy's
        own (`defaults`), over them what the backbone family measured for that strategy
        (`backbone_cls.train_defaults`: a CNN learns at far larger rates than a transformer), and on a
        small training set (`n_train` rows) enough epochs for `min_steps` optimizer steps. Without a
        backbone class or a row count it fills what it can (the strategy's own)."""
        import math

        from .strategies import STRATEGIES
        from .strategies.base import MAX_DEFAULT_EPOCHS

        c = self.model_copy(deep=True)
        defaults = STRATEGIES.get(c.strategy.name).defaults
        if defaults and backbone_cls is not None:
            defaults = {**defaults, **backbone_cls.train_defaults.get(c.strategy.name, {})}
        if not defaults:  # a strategy that chooses another (auto) trains nothing itself
            raise ValueError(
                f"strategy {c.strategy.name!r} picks another strategy (api.choose_strategy) before "
                "defaults can be filled in"
            )
        if c.train.epochs is None:
            c.train.epochs = int(defaults["epochs"])
            if n_train and defaults.get("min_steps"):  # "in steps rather than epochs when data is small"
                steps_per_epoch = math.ceil(math.ceil(n_train / c.train.batch_size) / c.train.grad_accum)
                needed = math.ceil(defaults["min_steps"] / steps_per_epoch)
                c.train.epochs = int(min(max(c.train.epochs, needed), MAX_DEFAULT_EPOCHS))
        if "warmup_ratio" in defaults and "warmup_ratio" not in self.train.model_fields_set:
            c.train.warmup_ratio = defaults["warmup_ratio"]
        if c.train.lr is None:
            c.train.lr = defaults["lr"]
        if c.train.head_lr is None:
            factor = defaults.get("head_lr_factor", 1.0)
            if c.train.lr * factor >= 1:
                raise ConfigError(
                    f"train.lr {c.train.lr:g}: strategy {c.strategy.name!r} trains the new head at "
                    f"{factor:g}x that, {c.train.lr * factor:g}, and learning rates must stay below 1; "
                    "set train.head_lr (below 1) or a smaller train.lr"
                )
            c.train.head_lr = c.train.lr * factor
        if c.train.metric is None:  # what the task scores: macro_f1 for classifiers, wer for speech
            from .tasks import TASKS

            c.train.metric = TASKS.get(c.task).default_metric
        if "early_stopping_patience" not in self.train.model_fields_set:
            c.train.early_stopping_patience = defaults.get("patience", 3)
        return c


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            model: type[BaseModel] = RunConfig
            for p in parent:
                model = model.model_fields[str(p)].annotation  # type: ignore[assignment]
            allowed = ", ".join(model.model_fields)
            lines.append(f"  {key}: unknown key; allowed keys here: {allowed}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {key}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_override(item: str) -> tuple[str, Any]:
    """'train.lr=3e-5' -> ('train.lr', 3e-05). Values are read as YAML scalars."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=3e-5")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {p!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None, sets: list[str] = ()
) -> RunConfig:
    """YAML file (optional) <- flag overrides (dotted keys) <- ``--set`` items, validated once."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(loaded).__name__}")
        tree = loaded
        source = str(p)
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(tree, key, value)
    for item in sets:
        set_dotted(tree, *parse_override(item))
    return config_from_dict(tree, source)


def config_from_dict(tree: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def config_to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_reference() -> str:
    """Markdown reference of every key, generated from the field descriptions."""
    out = []
    for section_name, field in RunConfig.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.append(f"\n`{section_name}:`\n")
            for name, f in ann.model_fields.items():
                out.append(f"- `{section_name}.{name}` (default `{f.default}`): {f.description}")
        else:
            out.append(f"- `{section_name}` (default `{field.default}`): {field.description}")
    return "\n".join(out)
