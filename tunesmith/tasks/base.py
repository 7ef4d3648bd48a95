"""The Task contract, the model every task trains (backbone -> head), and the defaults tasks share.

Generic code (api, training, cli, serve, report, card, export) uses a task only through what this
contract declares: how it is built (from training data, or from a saved run), how it encodes,
batches and scores rows, which metric selects the best model and in which direction, what it
outputs (labels with scores, or generated text), which extra evaluations it adds (a "before"
model, extra data splits such as a guard set), and the task-specific parts of the report, card
and CLI output. A new task is one file: a class registered in `TASKS` that subclasses
`TaskDefaults` and overrides what differs, plus its own tiny example for the contract tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn


@dataclass
class EvalOutput:
    """One evaluation of a model on rows, in input order."""

    metrics: dict[str, Any]  # the task's scores, "loss" included where the rows carry targets; {} otherwise
    predictions: list  # class ids (classifiers) or texts (generators)
    logits: np.ndarray | None = None  # [rows, classes] before softmax, where the output is a score per label
    details: list[dict] | None = None  # per-example scores where the task gives them (WER per utterance)

    @property
    def loss(self) -> float:
        return float(self.metrics.get("loss", math.nan))

    @property
    def probabilities(self) -> np.ndarray | None:
        if self.logits is None:
            return None
        return torch.softmax(torch.as_tensor(self.logits, dtype=torch.float32), dim=-1).numpy()


@dataclass
class TaskExample:
    """A task's own tiny example for the contract tests: a random model built on the spot, training
    and validation data, and the config entries the task needs (columns, decoding lengths)."""

    model: Path
    train: Path
    validation: Path
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class CardSections:
    """The task's parts of README.md (Markdown lines), placed by evaluation/model_card.py."""

    title: str  # "A text-classification model fine-tuned with tunesmith."
    description: list[str]
    data: list[str]
    procedure: list[str]
    results: list[str]
    loading_note: list[str]
    limitations: list[str]
    tags: list[str] = field(default_factory=list)
    front: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    name: ClassVar[str]
    modality: ClassVar[str]
    pipeline_task: ClassVar[str]  # transformers.pipeline's name for it
    output: ClassVar[str]  # what decode() gives per input: "labels" (label, score, scores) or generated text
    output_keys: ClassVar[tuple[str, ...]]  # the keys of each decode() dict
    metrics_tracked: ClassVar[tuple[str, ...]]  # what every evaluation records; train.metric picks one
    default_metric: ClassVar[str]
    lower_is_better: ClassVar[frozenset[str]]
    default_strategy: ClassVar[str]  # strategy.name when the config leaves it unset
    interactive: ClassVar[bool]  # answers conversations turn by turn (`tunesmith chat`, through `stream`)
    pooled_features: ClassVar[bool]  # a head on one vector per example (head-only and auto apply)
    extra_splits: ClassVar[tuple[str, ...]]  # data.<name> files scored besides validation and test
    config_sections: ClassVar[frozenset[str]]  # task options it reads ("augment", "model.window_seconds", ...)
    merge_adapters_on_save: ClassVar[bool]  # LoRA runs are saved merged (plain weights), not as adapters
    compares_with_base: ClassVar[bool]  # `evaluate` also scores the pre-trained model (before vs after)
    pipeline_kwargs: ClassVar[dict[str, Any]]  # for transformers.pipeline calls of parity checks

    labels: list[str]
    preprocessor: Any  # tokenizer, image processor, feature extractor or processor: saved with the run
    dropout: float

    @classmethod
    def from_data(cls, backbone, preprocessor, train, cfg, reporter) -> Task: ...

    @classmethod
    def from_saved(cls, folder: Path, meta: dict[str, Any], preprocessor) -> Task: ...

    @classmethod
    def backbone_options(cls, cfg) -> dict[str, Any]: ...  # task options the backbone needs when built

    @classmethod
    def split_key(cls, examples) -> list | None: ...  # what a held-out validation split stratifies on

    @classmethod
    def check_splits(cls, train, validation, test, preflight) -> None: ...

    @classmethod
    def tiny_example(cls, root: Path) -> TaskExample: ...

    @classmethod
    def summary_lines(cls, metrics: dict[str, Any]) -> list[str]: ...  # `tunesmith evaluate` without --json

    def state(self) -> dict[str, Any]: ...  # what tunesmith.json keeps to rebuild it (with from_saved)

    def build_head(self, backbone: nn.Module) -> nn.Module: ...

    def config_entries(self) -> dict[str, Any]: ...  # config.json entries (label maps)

    def save_preprocessing(self, folder: Path) -> None: ...

    def encode(self, examples, augment: bool = False, reporter=None) -> list[dict]: ...

    def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]: ...

    def feature_row(self, row: dict, features: torch.Tensor) -> dict: ...  # a row for head-only training

    def tokens(self, batch: dict[str, torch.Tensor]) -> int: ...  # non-pad tokens a batch feeds the backbone

    def compute_loss(self, model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    # `tracked_only`: the caller reads metrics_tracked alone (training's per-epoch check), so a task may
    # skip what costs more and feeds no choice (chat: generating sample replies)
    def evaluate(
        self, model, rows: Sequence[dict], batch_size: int, autocast: Callable, tracked_only: bool = False
    ) -> EvalOutput: ...

    @classmethod
    def improved(cls, record: dict[str, Any], best: dict[str, Any] | None, metric: str) -> bool: ...

    def decode(self, ev: EvalOutput) -> list[dict[str, Any]]: ...

    def check_evaluation_data(self, examples, source: str) -> None: ...

    def before_model(self, fresh, base_dir: Path, model_cfg): ...  # "before fine-tuning", or None

    def summarise(self, examples: dict, evals: dict, before: dict, cfg) -> tuple[dict[str, Any], list[str]]: ...

    # what `evaluate` adds to its scores; `before`: the untouched model's scores on the same rows, or None
    def describe_evaluation(self, examples, ev: EvalOutput, before: dict | None = None) -> dict[str, Any]: ...

    # (what the trivial predictor is, its score on `examples`) for metric, or None: a run no better
    # than it learned nothing, and says so loudly
    def trivial_score(self, train, examples, metric: str) -> tuple[str, float] | None: ...

    def headline(self, metrics: dict[str, Any]) -> str: ...

    def report_sections(self, metrics: dict, examples: dict, evals: dict) -> list[str]: ...

    def card_sections(self, out: Path, cfg, metrics: dict) -> CardSections: ...

    def format_prediction(self, prediction: dict[str, Any]) -> str: ...

    def parity_view(self, ev: EvalOutput) -> list[dict[str, Any]]: ...  # what parity checks compare (logits, text)

    def from_pipeline(self, outputs: list) -> list[dict[str, Any]]: ...  # pipeline() results -> parity_view's shape

    def output_difference(self, ours: list[dict], theirs: list[dict]) -> float: ...

    # eval.calibrate (tasks that read the "eval" section): fit a temperature on `rows` (validation) and fold it
    # into `model`'s weights; -> what was fitted ({"temperature", "ece_before", "ece_after", ...})
    def calibrate(self, model, rows: Sequence[dict], batch_size: int) -> dict[str, Any]: ...

    # ONNX (export/onnx.py): the graphs that compute `model`, traced on `rows` (validation rows; a task
    # that cannot be exported raises ExportError saying why) ...
    def onnx_graphs(self, model, rows: Sequence[dict]) -> list: ...

    # ... the stand-in `evaluate` takes for the model, running those graphs' onnxruntime sessions (by name) ...
    def onnx_model(self, sessions: dict) -> nn.Module: ...

    # ... and how the export compares with `model` on `rows`: {"max_abs_logit_diff", "agreement" (share
    # of identical predictions), "pytorch" and "onnx" (metrics where rows carry targets)}
    def onnx_parity(self, model, onnx_model, rows: Sequence[dict], batch_size: int) -> dict[str, Any]: ...


class TaskDefaults:
    """What most tasks share; a task class overrides what differs."""

    output: ClassVar[str] = "labels"
    default_strategy: ClassVar[str] = "full"  # strategy.name when the config leaves it unset
    interactive: ClassVar[bool] = False  # `tunesmith chat` talks to it (its `stream` answers a conversation)
    pooled_features: ClassVar[bool] = True
    extra_splits: ClassVar[tuple[str, ...]] = ()
    config_sections: ClassVar[frozenset[str]] = frozenset()
    merge_adapters_on_save: ClassVar[bool] = False
    compares_with_base: ClassVar[bool] = False
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"loss"})
    display_names: ClassVar[dict[str, str]] = {"loss": "loss"}

    @classmethod
    def backbone_options(cls, cfg) -> dict[str, Any]:
        return {}

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0

    @classmethod
    def improved(cls, record: dict[str, Any], best: dict[str, Any] | None, metric: str) -> bool:
        """Is evaluation `record` better than `best` on `metric` (a tie keeps the earlier one)?"""
        if best is None:
            return True
        value, ref = record[metric], best[metric]
        return value < ref - 1e-12 if metric in cls.lower_is_better else value > ref + 1e-12

    def before_model(self, fresh, base_dir: Path, model_cfg):
        return None  # a new head: there is no "before fine-tuning" model to score

    def summarise(self, examples: dict, evals: dict, before: dict, cfg) -> tuple[dict[str, Any], list[str]]:
        return {}, []

    def describe_evaluation(self, examples, ev: EvalOutput, before: dict | None = None) -> dict[str, Any]:
        return {}

    def trivial_score(self, train, examples, metric: str) -> tuple[str, float] | None:
        return None

    def check_evaluation_data(self, examples, source: str) -> None:
        return None

    def onnx_graphs(self, model, rows: Sequence[dict]) -> list:
        from ..errors import ExportError

        raise ExportError(f"{self.name} runs have no ONNX export")

    def onnx_model(self, sessions: dict) -> nn.Module:
        from ..models.onnx_runtime import OnnxForward

        return OnnxForward(sessions)

    @classmethod
    def metric_name(cls, key: str) -> str:
        return cls.display_names.get(key, key)


class TaskModel(nn.Module):
    """Backbone plus task head. A batch holding precomputed ``features`` skips the backbone: that is
    how head-only training on cached features shares this model, loss and loop."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "features" in batch:
            features = batch["features"]
        elif self.backbone.head_inside:
            # an encoder-decoder (Whisper): the head runs inside its own forward (in the decoder's
            # final-norm slot), so the backbone returns the logits
            return self.backbone(batch)
        else:
            features = self.backbone.forward_features(batch)
        return self.head(features.to(self.head_dtype))

    def train(self, mode: bool = True) -> TaskModel:
        """Batch-norm layers whose weights are frozen keep their pre-trained running statistics:
        frozen means frozen (and a LoRA run, which saves adapters only, reloads exactly). Those that
        train follow the weights at the momentum their backbone declares (models/backbone.py)."""
        super().train(mode)
        if mode:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                    m.eval()
        return self

    @property
    def head_dtype(self) -> torch.dtype:
        return next(self.head.parameters()).dtype


def unwrap(model) -> TaskModel:
    """The TaskModel inside whatever wraps it for training (DDP, accelerate)."""
    return model.module if hasattr(model, "module") else model
