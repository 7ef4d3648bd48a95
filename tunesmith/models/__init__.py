"""Pre-trained models: the package-shipped catalogue and local Hugging Face folders, offline only."""
import os

# Nothing in tunesmith may reach a model hub: make every transformers/hub call local-only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from .catalogue import CATALOGUE, CatalogueEntry, resolve_model  # noqa: E402
from .text_backbone import TextBackbone, load_text_backbone  # noqa: E402

__all__ = ["CATALOGUE", "CatalogueEntry", "resolve_model", "TextBackbone", "load_text_backbone"]
