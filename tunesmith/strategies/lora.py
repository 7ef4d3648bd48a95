"""lora: low-rank adapters (peft) on the backbone's attention projections; adapters and the task
head train, every pre-trained weight stays frozen. The run folder keeps the adapter and the head
together (peft #310/#577: a head lost on reload cannot happen here), and `tunesmith export
--merge` folds the adapters into plain weights that load without peft."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError
from . import STRATEGIES
from .base import MIN_STEPS, ParamCounts, StrategyDefaults, count_params, head_param_groups, split_decay

DEFAULT_LORA = {"rank": 8, "alpha": 16.0, "dropout": 0.1, "target_modules": None}


def default_targets(encoder: nn.Module) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as MAPPING

    model_type = getattr(getattr(encoder, "config", None), "model_type", None)  # None: a module of our own
    if model_type in MAPPING:
        return list(MAPPING[model_type])
    names = {n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if isinstance(m, nn.Linear)}
    if {"q_proj", "v_proj"} <= names:
        # BART-style attention (Whisper, wav2vec2, HuBERT, ...; peft's table has none of them): query and
        # value, the pair peft picks for BART/OPT and LoRA's paper adapts
        return ["q_proj", "v_proj"]
    convs = [(n, m) for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d)]
    if convs and not any(isinstance(m, nn.MultiheadAttention) for m in encoder.modules()):
        # a CNN (ResNet, EfficientNet, ...): peft's LoRA on its ungrouped convolutions. A depthwise
        # (grouped) convolution takes LoRA only at a rank divisible by its groups, which no default
        # rank is, and has few weights to adapt: it stays frozen. Names that also name a grouped
        # convolution are given in full, so only the ungrouped ones match.
        grouped = {n.rsplit(".", 1)[-1] for n, m in convs if m.groups > 1}
        plain = [(n, n.rsplit(".", 1)[-1]) for n, m in convs if m.groups == 1]
        return sorted({s for _, s in plain if s not in grouped}) + sorted(n for n, s in plain if s in grouped)
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if isinstance(m, nn.Linear)})
    raise ConfigError(
        f"no default LoRA target modules for model type {model_type!r}; set strategy.lora.target_modules "
        f"to some of its linear layers: {', '.join(linear)}"
    )


def inject_lora(encoder: nn.Module, options: dict[str, Any]) -> dict[str, Any]:
    """Add LoRA layers to `encoder` in place. Returns the peft config as a plain dict."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = options.get("target_modules") or default_targets(encoder)
    cfg = LoraConfig(
        r=options["rank"],
        lora_alpha=options["alpha"],
        lora_dropout=options["dropout"],
        target_modules=targets,
        bias="none",
    )
    try:
        inject_adapter_in_model(cfg, encoder)
    except ValueError as e:
        raise ConfigError(f"strategy.lora.target_modules {targets}: {e}") from None
    return {
        "r": cfg.r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "target_modules": sorted(cfg.target_modules),
        "bias": "none",
        "peft_type": "LORA",
    }


def merge_lora(encoder: nn.Module) -> None:
    """Fold every LoRA update into its base layer and put the plain layer back."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(encoder.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent = encoder.get_submodule(name.rsplit(".", 1)[0]) if "." in name else encoder
            setattr(parent, name.rsplit(".", 1)[-1], module.get_base_layer())


@STRATEGIES.register("lora")
class LoraStrategy(StrategyDefaults):
    name = "lora"
    defaults = {"epochs": 5, "lr": 5e-4, "head_lr_factor": 2.0, "patience": 3, "min_steps": MIN_STEPS}
    options = ("lora",)

    def __init__(self, lora: dict | None = None, **_: Any):
        self.lora = {**DEFAULT_LORA, **(lora or {})}
        self.peft_config: dict[str, Any] | None = None

    def prepare(self, model: nn.Module) -> ParamCounts:
        # the backbone family's own choice where the config names none; recorded, so a reload adapts the same
        self.lora["target_modules"] = self.lora.get("target_modules") or model.backbone.lora_targets()
        self.peft_config = inject_lora(model.backbone.encoder, self.lora)
        for n, p in model.named_parameters():
            p.requires_grad_("lora_" in n or n.startswith("head."))
        return count_params(model)

    def param_groups(self, model: nn.Module, train_cfg: Any) -> list[dict[str, Any]]:
        body = [(n, p) for n, p in model.backbone.named_parameters(prefix="backbone") if "lora_" in n]
        return split_decay(body, train_cfg.lr, train_cfg.weight_decay, "lora") + head_param_groups(model, train_cfg)

    def adapter_config(self) -> dict[str, Any] | None:
        """tunesmith.json entries that let a reload inject the same adapters into the base model."""
        return {"lora": self.peft_config, "lora_options": self.lora}
