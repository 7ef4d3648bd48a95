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


__all__ = ["inputs_for"]
