"""Audio classification (sound events, spoken commands, speaker traits): clip -> pooled encoder
features -> dropout -> linear. Features were computed once per clip (modalities/audio.py); collate
only rebuilds Whisper's fixed window or pads waveforms, so each epoch never touches a file."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from . import TASKS
from .base import (ClassificationHead, TaskModel, classification_loss, classification_metrics,
                   decode_classification)


def collate_audio(rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Model inputs of a batch of audio rows. Whisper: the full mel window (kept frames, then the
    row's constant padding value) plus the count of encoder frames holding audio. wav2vec2-style:
    zero-padded waveforms plus their lengths (the backbone masks or groups by them)."""
    if "mel" in rows[0]:
        n_mels, width = rows[0]["mel"].shape[0], int(rows[0]["mel_frames"])
        x = torch.empty(len(rows), n_mels, width)
        for i, r in enumerate(rows):
            k = r["mel"].shape[1]
            x[i, :, :k] = r["mel"]
            x[i, :, k:] = float(r["mel_fill"])
        return {"input_features": x, "frames": torch.tensor([int(r["frames"]) for r in rows], dtype=torch.long)}
    lengths = [int(r["input_values"].shape[0]) for r in rows]
    x = torch.zeros(len(rows), max(lengths))
    for i, r in enumerate(rows):
        x[i, :lengths[i]] = r["input_values"]
    return {"input_values": x, "lengths": torch.tensor(lengths, dtype=torch.long)}


@TASKS.register("audio-classification")
class AudioClassificationTask:
    name = "audio-classification"
    modality = "audio"
    pipeline_task = "audio-classification"

    def __init__(self, labels: Sequence[str], dropout: float = 0.1):
        self.labels = list(labels)
        self.label2id = {label: i for i, label in enumerate(self.labels)}
        self.dropout = dropout

    def build_head(self, backbone: nn.Module) -> nn.Module:
        return ClassificationHead(backbone.feature_dim, len(self.labels), self.dropout)

    def collate(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "features" in rows[0]:
            batch = {"features": torch.stack([torch.as_tensor(r["features"]) for r in rows])}
        else:
            batch = collate_audio(rows)
        if "label" in rows[0]:
            batch["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
        return batch

    def compute_loss(self, model: TaskModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return classification_loss(model, batch)

    def metrics(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, Any]:
        return classification_metrics(self.labels, predictions, references)

    def decode(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        return decode_classification(self.labels, logits)
