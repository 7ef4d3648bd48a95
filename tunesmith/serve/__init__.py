"""Using a trained model: Predictor (imports nothing from training/), later the HTTP server."""

from .predictor import Predictor, load

__all__ = ["Predictor", "load"]
