"""model.window_seconds: a Whisper that hears a shorter window than it was trained with.

Used by speech recognition (WhisperForConditionalGeneration) and audio classification (the Whisper
encoder alone); see set_whisper_window for what changes and why it is safe to save.
"""

from __future__ import annotations

from ..errors import ConfigError


def set_whisper_window(model, feature_extractor, seconds: int | None) -> None:
    """model.window_seconds: shorten the fixed window a Whisper hears (30 s for real checkpoints).

    Whisper pads every clip to its window and its encoder attends over all of it, so a 3 s clip costs
    as much as a 30 s one. A shorter window keeps the first `seconds` of the encoder's (fixed,
    sinusoidal) position table and makes the feature extractor pad to `seconds`: the encoder's work
    falls about in proportion. `model`: a WhisperForConditionalGeneration (speech recognition) or a
    WhisperEncoder (audio classification); the feature extractor is changed in place too unless it
    already pads to `seconds` (the base model of an existing run). Both are saved with the run, so a
    reloaded run and `pipeline()` hear the same window."""
    if seconds is None:
        return
    enc = model.get_encoder()  # a WhisperEncoder returns itself
    rate, hop = int(feature_extractor.sampling_rate), int(feature_extractor.hop_length)
    stride = int(enc.conv1.stride[0] * enc.conv2.stride[0])
    have = int(enc.embed_positions.weight.shape[0])
    if (seconds * rate) % (hop * stride):
        raise ConfigError(
            f"model.window_seconds {seconds}: not a whole number of encoder positions "
            f"({hop * stride} samples each at {rate} Hz)"
        )
    positions = seconds * rate // (hop * stride)
    if positions > have:
        raise ConfigError(
            f"model.window_seconds {seconds}: this model hears at most {have * hop * stride / rate:g} s "
            "(its position table); use that or less"
        )
    if positions < have:
        table = enc.embed_positions
        table.weight = table.weight[:positions].detach().clone()  # a buffer (WhisperBackbone froze it)
        table.num_embeddings = positions
        enc.max_source_positions = positions
        enc.config.max_source_positions = positions  # the encoder checks its input length against this
        model.config.max_source_positions = positions
    if int(feature_extractor.n_samples) != seconds * rate:
        feature_extractor.chunk_length = seconds
        feature_extractor.n_samples = seconds * rate
        feature_extractor.nb_max_frames = feature_extractor.n_samples // hop


def window_frames(model) -> int:
    """Input mel frames a Whisper hears: its position table times its convolutions' strides."""
    enc = model.get_encoder()
    return int(enc.embed_positions.weight.shape[0] * enc.conv1.stride[0] * enc.conv2.stride[0])
