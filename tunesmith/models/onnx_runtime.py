"""What an ONNX export is made of and how it runs: the graphs a task hands the exporter (OnnxGraph),
an onnxruntime session per graph, and `OnnxForward`, the stand-in for a TaskModel whose forward is one
graph. A task's `evaluate` takes the stand-in where it takes the PyTorch model, so an export folder is
scored, predicted and served with the run's own preprocessing, batching and decoding."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass
class OnnxGraph:
    """One graph to export: `module(*inputs.values())` -> `outputs` (the module's forward takes
    `*tensors`), traced on `inputs` with every axis dynamic that the model lets be (batch, sequence)
    but the `static_axes` it names."""

    name: str  # the file is <name>.onnx
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: tuple[str, ...]
    static_axes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # axes the model fixes (channels)


class BatchForward(nn.Module):
    """A module taking a batch dict, as a graph of positional tensors (what the exporter traces)."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(dict(zip(self.names, tensors)))


# onnxruntime graph fusions left out because their CPU kernels are slower than the ops they replace. Measured on
# all-MiniLM-L6-v2 (1,000 tweets in length-sorted batches of 32, 2 cores, onnxruntime 1.32): without
# SkipLayerNormFusion (Add + LayerNormalization stay apart) fp32 ran 404 inputs/s against 373, int8 1,239 against 888.
SLOWER_FUSIONS = ("SkipLayerNormFusion",)


def session(path: Path):
    """An onnxruntime CPU session; graph optimisations on (onnxruntime's default, all levels) but SLOWER_FUSIONS."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the optimiser's notes are not the user's business
    return ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=list(SLOWER_FUSIONS)
    )


def run_session(sess, feeds: dict[str, torch.Tensor | np.ndarray]) -> list[torch.Tensor]:
    """Run with the feeds the graph takes (a batch may carry more: labels), as torch tensors."""
    wanted = {i.name for i in sess.get_inputs()}
    arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in feeds.items()}
    missing = wanted - set(arrays)
    if missing:
        raise ValueError(f"the ONNX graph needs inputs {sorted(missing)} the batch does not have")
    return [torch.from_numpy(np.asarray(o)) for o in sess.run(None, {k: arrays[k] for k in wanted})]


class OnnxRuntimeModel(nn.Module):
    """Base of the stand-ins: an nn.Module (evaluate calls eval(), train() and reads the device of its
    parameters) holding onnxruntime sessions instead of weights."""

    def __init__(self, sessions: dict):
        super().__init__()
        self.sessions = sessions
        # one empty parameter so `next(model.parameters()).device` says cpu, as for a real model
        self.device_probe = nn.Parameter(torch.zeros(0), requires_grad=False)


class OnnxForward(OnnxRuntimeModel):
    """A TaskModel whose forward is the one graph "model": batch dict -> its first output."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return run_session(self.sessions["model"], batch)[0]
