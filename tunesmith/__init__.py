"""tunesmith: fine-tune pre-trained models for custom tasks, offline."""

__version__ = "0.1.0"

from .api import Predictor, RunResult, evaluate, finetune, load  # noqa: E402
from .config import RunConfig, load_config  # noqa: E402

__all__ = ["finetune", "evaluate", "load", "Predictor", "RunResult", "RunConfig", "load_config", "__version__"]
