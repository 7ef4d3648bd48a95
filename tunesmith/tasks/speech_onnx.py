"""Whisper as two ONNX graphs, and greedy decoding on onnxruntime.

encoder.onnx: input_features [batch, mels, frames] -> last_hidden_state; decoder.onnx: decoder_input_ids
[batch, tokens] + encoder_hidden_states -> logits [batch, tokens, vocabulary] (the run's head inside, in
the decoder's final-norm slot). The decoder has no key/value cache: each step runs the tokens so far,
which is exact and simple, and costs little for the short transcripts of fine-tuning data. Greedy
decoding applies what `generate()` applies for this run's generation config (no timestamps): the
suppressed tokens at every step, the begin-suppressed ones at the first, the same prompt and
max_new_tokens; the export's parity check compares transcripts with `generate()` on validation rows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.onnx_runtime import OnnxRuntimeModel, run_session


class WhisperEncoderGraph(nn.Module):
    def __init__(self, whisper: nn.Module):
        super().__init__()
        self.whisper = whisper

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.whisper.model.encoder(tensors[0]).last_hidden_state


class WhisperDecoderGraph(nn.Module):
    def __init__(self, whisper: nn.Module):
        super().__init__()
        self.whisper = whisper

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        ids, hidden = tensors
        out = self.whisper.model.decoder(input_ids=ids, encoder_hidden_states=hidden, use_cache=False)
        return self.whisper.proj_out(out.last_hidden_state)


class OnnxWhisper(OnnxRuntimeModel):
    """encoder.onnx + decoder.onnx, with what the speech task's evaluate asks of a Whisper."""

    @property
    def frames(self) -> int:
        """Mel frames the encoder hears (its window: fixed by its position table, so static in the graph)."""
        return int(self.sessions["encoder"].get_inputs()[0].shape[2])

    def encode(self, input_features: torch.Tensor) -> torch.Tensor:
        return run_session(self.sessions["encoder"], {"input_features": input_features})[0]

    def logits(self, decoder_input_ids: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        feeds = {"decoder_input_ids": decoder_input_ids, "encoder_hidden_states": hidden}
        return run_session(self.sessions["decoder"], feeds)[0]

    def greedy(self, hidden: torch.Tensor, prompt: list[int], generation_config) -> list[list[int]]:
        """Token ids after the prompt, up to and without the end token, for each row of `hidden`."""
        gc = generation_config
        eos = int(gc.eos_token_id if not isinstance(gc.eos_token_id, list) else gc.eos_token_id[0])
        suppress = list(gc.suppress_tokens or [])
        begin = list(gc.begin_suppress_tokens or [])
        n = hidden.shape[0]
        ids = np.tile(np.asarray(prompt, dtype=np.int64), (n, 1))
        done = np.zeros(n, dtype=bool)
        out: list[list[int]] = [[] for _ in range(n)]
        hidden_np = hidden.numpy()
        for step in range(int(gc.max_new_tokens)):
            feeds = {"decoder_input_ids": ids, "encoder_hidden_states": hidden_np}
            last = self.sessions["decoder"].run(None, feeds)[0][:, -1, :]
            if suppress:
                last[:, suppress] = -np.inf
            if step == 0 and begin:
                last[:, begin] = -np.inf
            nxt = last.argmax(-1)
            nxt[done] = eos
            for i in np.flatnonzero(~done):
                if nxt[i] != eos:
                    out[i].append(int(nxt[i]))
            done |= nxt == eos
            if done.all():
                break
            ids = np.concatenate([ids, nxt[:, None].astype(np.int64)], axis=1)
        return out
