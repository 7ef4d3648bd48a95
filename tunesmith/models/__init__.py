"""Pre-trained models: the package-shipped catalogue, local Hugging Face folders (offline only), and
the Backbone contract with its registry.

A backbone class is registered by name and says which modality it serves and which checkpoints it
takes (`handles`, by config.json: its model_type, or a tunesmith-built module). `select_backbone`
picks the first registered class of a modality that takes a folder, so a Whisper folder becomes a
recogniser for speech recognition and a pooled encoder for audio classification, and a new
architecture is one registered class.
"""

import os

# Nothing in tunesmith may reach a model hub: make every transformers/hub call local-only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from . import audio_backbone, causal_lm_backbone, efficientnet_lite, speech_backbone, text_backbone, vision_backbone  # noqa: E402,F401,I001
from .backbone import BACKBONES, Backbone, BackboneDefaults, NativeLayout, read_config, select_backbone  # noqa: E402
from .catalogue import CATALOGUE, CatalogueEntry, resolve_model  # noqa: E402

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneDefaults",
    "NativeLayout",
    "read_config",
    "select_backbone",
    "CATALOGUE",
    "CatalogueEntry",
    "resolve_model",
]
