"""What differs between text, images and audio before the model sees a batch: reading examples,
loading the backbone and its preprocessor, encoding examples into rows. Tasks name their modality;
api.finetune, the Predictor and the run format go through these and stay modality-agnostic."""
from __future__ import annotations


def inputs_for(modality: str):
    if modality == "text":
        from .text import TextInputs

        return TextInputs()
    if modality == "image":
        from .image import ImageInputs

        return ImageInputs()
    if modality == "audio":
        from .audio import AudioInputs

        return AudioInputs()
    if modality == "speech":  # speech recognition: clips + transcripts (the audio reader, a recogniser)
        from .speech import SpeechInputs

        return SpeechInputs()
    raise ValueError(f"no inputs for modality {modality!r}")


def file_inputs(inputs, file_kind: str, expected: str) -> list:
    """What `predict` was given for a file modality (paths or encoded bytes) -> items to decode:
    bytes as they are, paths resolved and checked to exist, anything else refused naming the input."""
    from pathlib import Path

    from ..errors import DataError

    items: list = []
    for i, x in enumerate(inputs):
        if isinstance(x, (bytes, bytearray)):
            items.append(bytes(x))
        elif isinstance(x, (str, Path)):
            p = Path(x)
            if not p.is_file():
                raise DataError(f"input {i + 1}: {file_kind} not found: {p}")
            items.append(str(p.resolve()))
        else:
            raise DataError(f"input {i + 1}: expected {expected}, got {type(x).__name__}")
    return items


__all__ = ["inputs_for", "file_inputs"]
