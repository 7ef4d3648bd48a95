"""What every classification task shares: one label per example from pooled features, a
dropout + linear head, cross-entropy, accuracy / macro-F1 / per-class scores, and {"label", "score",
"scores"} outputs. Text, image and audio classification subclass it and supply how their inputs
become rows and batches (`_encode_inputs`, `_collate_inputs`) and their task options."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..data.batching import call_overhead_for, eval_batches, row_lengths
from ..data.streaming import MappedRows
from ..errors import DataError
from .base import CardSections, EvalOutput, TaskDefaults, TaskModel


class ClassificationHead(nn.Module):
    """pooled features -> dropout -> linear; the layout transformers' BERT classifier uses too."""

    def __init__(self, in_dim: int, num_labels: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_dim, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(x))


class ClassificationTask(TaskDefaults):
    output: ClassVar[str] = "labels"
    output_keys: ClassVar[tuple[str, ...]] = ("label", "score", "scores")
    metrics_tracked: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "macro_f1")
    default_metric: ClassVar[str] = "macro_f1"
    config_sections: ClassVar[frozenset[str]] = frozenset({"eval"})  # eval.calibrate
    display_names: ClassVar[dict[str, str]] = {"loss": "loss", "accuracy": "accuracy", "macro_f1": "macro-F1"}

    def __init__(self, labels: Sequence[str], preprocessor=None, dropout: float = 0.1):
        self.labels = list(labels)
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.preprocessor = preprocessor
        self.dropout = dropout

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_data(cls, backbone, preprocessor, train, cfg, reporter=None) -> ClassificationTask:
        return cls(
            sorted(set(train.labels)),
            preprocessor,
            dropout=cfg.train.dropout,
            **cls._options(cfg, preprocessor, train, reporter),
        )

    @classmethod
    def _options(cls, cfg, preprocessor, train, reporter) -> dict[str, Any]:
        """Extra constructor arguments a subclass takes from the run config."""
        return {}

    @classmethod
    def from_saved(cls, folder: Path, meta: dict[str, Any], preprocessor) -> ClassificationTask:
        state = dict(meta.get("task_state") or cls._legacy_state(meta))
        return cls(state.pop("labels"), preprocessor, **state)

    @classmethod
    def _legacy_state(cls, meta: dict[str, Any]) -> dict[str, Any]:
        """Folders written before tunesmith.json had "task_state" kept these at its top level."""
        return {"labels": meta["labels"], "dropout": meta.get("dropout", 0.1)}

    def state(self) -> dict[str, Any]:
        return {"labels": self.labels, "dropout": self.dropout}

    @classmethod
    def split_key(cls, examples) -> list:
        return examples.labels

    @classmethod
    def check_splits(cls, train, validation, test, preflight) -> None:
        from ..data.preflight import check_train_validation

        check_train_validation(train, validation, preflight)
        if test is not None:
            unseen = sorted(set(test.labels) - set(train.labels))
            if unseen:
                raise DataError(f"{test.source}: test labels {unseen} never appear in the training data")

    def check_evaluation_data(self, examples, source: str) -> None:
        unseen = sorted(set(examples.labels) - set(self.labels))
        if unseen:
            raise DataError(f"{source}: labels {unseen} are not among the model's labels {self.labels}")

    def build_head(self, backbone: nn.Module) -> nn.Module:
        return ClassificationHead(backbone.feature_dim, len(self.labels), self.dropout)

    def config_entries(self) -> dict[str, Any]:
        return {
            "id2label": {str(i): label for i, label in enumerate(self.labels)},
            "label2id": dict(self.label2id),
            "num_labels": len(self.labels),
            "problem_type": "single_label_classification",
        }

    def save_preprocessing(self, folder: Path) -> None:
        self.preprocessor.save_pretrained(folder)

    # -- data --------------------------------------------------------------------------------
    def _encode_inputs(self, examples, augment: bool, reporter) -> list[dict]:
        raise NotImplementedError

    def _collate_inputs(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def encode(self, examples, augment: bool = False, reporter=None) -> Sequence[dict]:
        rows = self._encode_inputs(examples, augment, reporter)
        if examples.labels is not None:
            if isinstance(rows, MappedRows):  # data.streaming: rows read from disk carry their label ids beside
                return rows.with_labels([self.label2id[y] for y in examples.labels])
            for r, y in zip(rows, examples.labels):
                r["label"] = self.label2id[y]
        return rows

    def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "features" in rows[0]:
            batch = {"features": torch.stack([torch.as_tensor(r["features"]) for r in rows])}
        else:
            batch = self._collate_inputs(rows)
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        return batch

    def trivial_score(self, train, examples, metric: str) -> tuple[str, float] | None:
        """Always predicting the training set's majority class."""
        from collections import Counter

        if metric == "loss" or not examples.labels:
            return None
        majority = min(Counter(train.labels).items(), key=lambda kv: (-kv[1], kv[0]))[0]
        refs = [self.label2id[y] for y in examples.labels if y in self.label2id]
        score = self.metrics([self.label2id[majority]] * len(refs), refs)[metric]
        return f"always predicting the majority class {majority!r}", float(score)

    def feature_row(self, row: dict, features: torch.Tensor) -> dict:
        return {"features": features, "label": row["label"]} if "label" in row else {"features": features}

    # -- training / evaluation -------------------------------------------------------------
    def compute_loss(self, model: TaskModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy in at least fp32 (logits may come from a bf16 autocast; a head solved in
        float64 keeps its precision)."""
        import torch.nn.functional as F

        logits = model(batch)
        wide = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return {"loss": F.cross_entropy(wide, batch["labels"]), "logits": logits}

    def metrics(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, Any]:
        from ..evaluation.metrics import classification_metrics

        return classification_metrics(np.asarray(predictions), np.asarray(references), list(self.labels))

    @torch.no_grad()
    def evaluate(
        self, model, rows: Sequence[dict], batch_size: int, autocast: Callable, tracked_only: bool = False
    ) -> EvalOutput:
        """Logits for every row (batched by length, returned in input order); loss and scores where
        the rows carry labels."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        labelled = bool(rows) and "label" in rows[0]
        logits_all: list[torch.Tensor | None] = [None] * len(rows)
        loss_sum = 0.0
        for idx in eval_batches(row_lengths(rows), batch_size, call_overhead_for(autocast, device.type)):
            batch = {k: v.to(device) for k, v in self.collate([rows[i] for i in idx]).items()}
            with autocast():
                if labelled:
                    out = self.compute_loss(model, batch)
                    loss_sum += out["loss"].item() * len(idx)
                    logits = out["logits"]
                else:
                    logits = model(batch)
            for j, i in enumerate(idx):
                logits_all[i] = logits[j].float().cpu()
        model.train(was_training)
        logits = torch.stack(logits_all).numpy()  # type: ignore[arg-type]
        preds = logits.argmax(-1).tolist()
        metrics: dict[str, Any] = {}
        if labelled:
            refs = [r["label"] for r in rows]
            metrics = self.metrics(preds, refs)
            metrics["loss"] = loss_sum / len(rows)
            if not tracked_only:  # what is reported, not each per-epoch check
                from ..evaluation.calibration import ece, softmax
                from ..evaluation.intervals import classification_intervals

                metrics["intervals"] = classification_intervals(preds, refs, len(self.labels))
                metrics["ece"] = ece(softmax(logits.astype(np.float64)), np.asarray(refs))
        return EvalOutput(metrics, preds, logits)

    def decode(self, ev: EvalOutput) -> list[dict[str, Any]]:
        """{"label", "score", "scores"} per row: the same shape for every classification task."""
        out = []
        for p in ev.probabilities:
            k = int(p.argmax())
            out.append(
                {
                    "label": self.labels[k],
                    "score": float(p[k]),
                    "scores": {label: float(p[i]) for i, label in enumerate(self.labels)},
                }
            )
        return out

    # -- parity with transformers.pipeline --------------------------------------------------
    pipeline_kwargs: ClassVar[dict[str, Any]] = {"top_k": None, "function_to_apply": "none"}  # raw logits

    def parity_view(self, ev: EvalOutput) -> list[dict[str, float]]:
        return [{label: float(row[i]) for i, label in enumerate(self.labels)} for row in ev.logits]

    def from_pipeline(self, outputs: list) -> list[dict[str, float]]:
        return [{d["label"]: float(d["score"]) for d in out} for out in outputs]

    def output_difference(self, ours: list[dict], theirs: list[dict]) -> float:
        """Largest |logit difference| over inputs and labels."""
        return max(abs(a[label] - b[label]) for a, b in zip(ours, theirs) for label in a)

    # -- calibration (eval.calibrate) -------------------------------------------------------------
    def calibrate(self, model, rows: Sequence[dict], batch_size: int) -> dict[str, Any]:
        """Temperature scaling fitted on `rows` (validation), folded into the head's last linear layer."""
        import contextlib

        from ..evaluation.calibration import ece, fit_temperature, softmax

        ev = self.evaluate(model, rows, batch_size, contextlib.nullcontext, tracked_only=True)
        logits, refs = ev.logits.astype(np.float64), np.asarray([r["label"] for r in rows])
        t = fit_temperature(logits, refs)
        layer = model.head.classifier
        with torch.no_grad():
            layer.weight.div_(t)
            layer.bias.div_(t)
        return {
            "temperature": t,
            "fitted_on": f"{len(rows)} validation rows",
            "ece_before": ece(softmax(logits), refs),
            "ece_after": ece(softmax(logits / t), refs),
        }

    # -- ONNX export ----------------------------------------------------------------------------
    def onnx_graphs(self, model, rows: Sequence[dict]) -> list:
        """One graph: the batch's input tensors -> logits (the head included)."""
        from ..models.onnx_runtime import BatchForward, OnnxGraph

        inputs = {k: v for k, v in self._collate_inputs(rows).items() if k != "labels"}
        return [OnnxGraph("model", BatchForward(model, list(inputs)), inputs, ("logits",))]

    def onnx_parity(self, model, onnx_model, rows: Sequence[dict], batch_size: int) -> dict[str, Any]:
        import contextlib

        ref = self.evaluate(model, rows, batch_size, contextlib.nullcontext)
        got = self.evaluate(onnx_model, rows, batch_size, contextlib.nullcontext)
        return {
            "max_abs_logit_diff": float(np.abs(ref.logits - got.logits).max()),
            "agreement": float(np.mean(np.asarray(ref.predictions) == np.asarray(got.predictions))),
            "pytorch": ref.metrics,
            "onnx": got.metrics,
        }

    # -- what people read ------------------------------------------------------------------
    def headline(self, metrics: dict[str, Any]) -> str:
        from ..evaluation.card_helpers import with_ci

        val, test = metrics["validation"], metrics.get("test")
        return f"validation accuracy {with_ci(val, 'accuracy')}, macro-F1 {with_ci(val, 'macro_f1')}" + (
            f"; test accuracy {with_ci(test, 'accuracy')}" if test else ""
        )

    @classmethod
    def summary_lines(cls, m: dict[str, Any]) -> list[str]:
        from ..evaluation.card_helpers import with_ci

        lines = [
            f"accuracy {with_ci(m, 'accuracy')}   macro-F1 {with_ci(m, 'macro_f1')}   n={m['n']}   ([95% CI])",
            f"{'label':<20} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}",
        ]
        for label, s in m["per_class"].items():
            lines.append(f"{label:<20} {s['precision']:>9.4f} {s['recall']:>7.4f} {s['f1']:>7.4f} {s['support']:>8}")
        cm = m["confusion_matrix"]
        lines.append("confusion matrix (rows: true, columns: predicted):")
        lines.append(" " * 20 + " ".join(f"{label[:8]:>8}" for label in cm["labels"]))
        for label, row in zip(cm["labels"], cm["matrix"]):
            lines.append(f"{label:<20}" + " ".join(f"{v:>8}" for v in row))
        return lines

    def format_prediction(self, r: dict[str, Any]) -> str:
        return f"{r['label']}\t{r['score']:.4f}\t{r['input']}"

    def report_sections(self, metrics: dict, examples: dict, evals: dict) -> list[str]:
        from ..evaluation.classification_report import report_sections

        return report_sections(metrics, examples, evals, self.labels, self._validation_gallery)

    def _validation_gallery(self, ex, ev) -> list[str]:
        """Report sections that show validation examples themselves (images); none by default."""
        return []

    def card_sections(self, out: Path, cfg, metrics: dict) -> CardSections:
        from ..evaluation.classification_report import card_sections

        return card_sections(self, out, cfg, metrics)

    def limitations(self, out: Path, cfg) -> list[str]:
        """Extra card limitations of a subclass (e.g. a Whisper window)."""
        return []
