"""Layer groups, bottom to top: the one source of layer order for unfreezing and layer-wise LR
decay (DESIGN rule 4), shared by every backbone built on a transformers model."""

from __future__ import annotations

from torch import nn

from ..errors import ModelError


def find_blocks(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """The repeated blocks (transformer layers, CNN stages): the ModuleList of same-class modules
    holding the most parameters."""
    best: list[tuple[str, nn.Module]] = []
    best_params = -1
    for name, mod in encoder.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1:
            n = sum(p.numel() for p in mod.parameters())
            if n > best_params:
                best_params = n
                best = [(f"{name}.{i}", m) for i, m in enumerate(mod)]
    if not best:
        raise ModelError(f"cannot find the repeated layers of {type(encoder).__name__} to order them")
    return best


def group_parameters(encoder: nn.Module, prefix: str) -> list[tuple[str, list[str]]]:
    """[(group, [parameter names])]: everything before the first block ("embeddings": token
    embeddings or a CNN stem), each block ("layer.i"), everything after ("top": final norms)."""
    blocks = find_blocks(encoder)
    block_of = {name: i for i, (name, _) in enumerate(blocks)}
    bottom, top = [], []
    per_block: list[list[str]] = [[] for _ in blocks]
    seen_block = False
    for name, _ in encoder.named_parameters():
        idx = next((block_of[p] for p in block_of if name.startswith(p + ".")), None)
        full = f"{prefix}{name}"
        if idx is not None:
            per_block[idx].append(full)
            seen_block = True
        elif not seen_block:
            bottom.append(full)
        else:
            top.append(full)
    groups = [("embeddings", bottom)] if bottom else []
    groups += [(f"layer.{i}", names) for i, names in enumerate(per_block)]
    if top:
        groups.append(("top", top))
    return groups
