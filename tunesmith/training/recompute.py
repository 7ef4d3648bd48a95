"""Activation recomputation ("gradient checkpointing"): keep only each layer's input in the forward
pass and recompute the layer inside the backward pass.

Why it is an option: on a small encoder the activations, not the weights, set peak training memory
(all-MiniLM-L6-v2, batch 32 of up to 128 tokens: ~1 GB of activations against 90 MB of weights), so
what lora saves (gradients and AdamW moments of the frozen weights) barely shows until they are
recomputed. transformers' own implementation is used (non-reentrant torch.utils.checkpoint, RNG state
preserved so dropout masks match and resumed runs stay exact)."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError


def enable_activation_recompute(backbone: nn.Module) -> str:
    """Switch it on for the transformers model inside `backbone`; returns that model's class name."""
    from transformers import PreTrainedModel

    for module in backbone.modules():
        if isinstance(module, PreTrainedModel):
            if not module.supports_gradient_checkpointing:
                break
            module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            return type(module).__name__
    raise ConfigError(
        f"train.gradient_checkpointing: this backbone ({type(backbone).__name__} of "
        f"{getattr(getattr(backbone, 'config', None), 'model_type', 'a model of our own')}) "
        "does not support it; remove the option"
    )
