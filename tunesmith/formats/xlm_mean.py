"""xlm-mean: BERT + mean pooling + linear head saved as transformers' own XLMForSequenceClassification.

transformers has no BERT classification head that mean-pools, so a mean-pooled BERT classifier
(all-MiniLM-L6-v2 declares mean pooling) cannot be saved as BertForSequenceClassification without
changing the model. XLM's encoder is the same post-LayerNorm transformer as BERT (same attention
scaling, exact GELU, FFN = 4x hidden), and its sequence-summary head can be "mean -> linear".
So the very same function, with the same pooling, is expressible there:
- BERT's token-type embedding is folded into XLM's position table (type 0) and into the embedding
  row of token id 1, which XLM adds for type-1 tokens (only when id 1 is an unused vocab slot);
- XLM's summary mean counts every position, pads included, so the saved tokenizer has no pad
  token: transformers' pipeline then refuses batched calls loudly ("cannot do batching") instead
  of returning pad-diluted scores, and unbatched calls match tunesmith to float rounding.
The few original tensors the folding overwrote are kept in tunesmith_extra.safetensors, so
tunesmith reloads the BERT weights bit for bit.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from . import (
    FORMATS,
    atomic_save_tensors,
    atomic_write_json,
    check_state,
    how_to_load_lines,
    keeps_adapters,
    pipeline_lines,
    read_json,
)

EXTRA_FILE = "tunesmith_extra.safetensors"


# XLM module -> BERT module, per transformer layer.
_LAYER_MAP = {
    "attentions.{i}.q_lin": "attention.self.query",
    "attentions.{i}.k_lin": "attention.self.key",
    "attentions.{i}.v_lin": "attention.self.value",
    "attentions.{i}.out_lin": "attention.output.dense",
    "layer_norm1.{i}": "attention.output.LayerNorm",
    "ffns.{i}.lin1": "intermediate.dense",
    "ffns.{i}.lin2": "output.dense",
    "layer_norm2.{i}": "output.LayerNorm",
}


def _layer_names(num_layers: int) -> list[tuple[str, str]]:
    """(XLM tensor name, BERT tensor name) for every weight and bias of every layer."""
    return [
        (f"transformer.{x.format(i=i)}.{p}", f"encoder.layer.{i}.{b}.{p}")
        for i in range(num_layers)
        for x, b in _LAYER_MAP.items()
        for p in ("weight", "bias")
    ]


def can_use_xlm_layout(backbone, tokenizer) -> bool:
    cfg = backbone.encoder.config
    if cfg.model_type != "bert" or backbone.pooling != "mean":
        return False
    if cfg.hidden_act != "gelu" or cfg.intermediate_size != 4 * cfg.hidden_size:
        return False
    if getattr(cfg, "position_embedding_type", "absolute") != "absolute" or cfg.type_vocab_size > 2:
        return False
    if getattr(cfg, "is_decoder", False) or getattr(cfg, "add_cross_attention", False):
        return False
    if cfg.type_vocab_size == 2:
        slot = tokenizer.convert_ids_to_tokens(1)
        if not (isinstance(slot, str) and slot.startswith("[unused")):
            return False
    return True


def to_xlm(encoder, classifier: torch.nn.Linear, dropout: float, label_config: dict[str, Any]):
    """-> (config dict, tensors in XLMForSequenceClassification names, extra tensors to undo folding)."""
    c = encoder.config
    sd = encoder.state_dict()
    word = sd["embeddings.word_embeddings.weight"].clone()
    pos = sd["embeddings.position_embeddings.weight"]
    tt = sd["embeddings.token_type_embeddings.weight"]
    extra = {"word_row1": word[1].clone(), "position_embeddings": pos.clone(), "token_type_embeddings": tt.clone()}
    # XLM adds embeddings(token_type_ids): word[0] for type 0, word[1] for type 1.
    new_pos = pos + tt[0] - word[0]
    if tt.shape[0] > 1:
        word[1] = word[0] + tt[1] - tt[0]
    t = {
        "transformer.embeddings.weight": word,
        "transformer.position_embeddings.weight": new_pos,
        "transformer.layer_norm_emb.weight": sd["embeddings.LayerNorm.weight"],
        "transformer.layer_norm_emb.bias": sd["embeddings.LayerNorm.bias"],
        "sequence_summary.summary.weight": classifier.weight.detach(),
        "sequence_summary.summary.bias": classifier.bias.detach(),
    }
    for xlm_name, bert_name in _layer_names(c.num_hidden_layers):
        t[xlm_name] = sd[bert_name]
    config = {
        "model_type": "xlm",
        "architectures": ["XLMForSequenceClassification"],
        "vocab_size": c.vocab_size,
        "emb_dim": c.hidden_size,
        "n_layers": c.num_hidden_layers,
        "n_heads": c.num_attention_heads,
        "dropout": c.hidden_dropout_prob,
        "attention_dropout": c.attention_probs_dropout_prob,
        "gelu_activation": True,
        "sinusoidal_embeddings": False,
        "causal": False,
        "asm": False,
        "n_langs": 1,
        "use_lang_emb": False,
        "max_position_embeddings": c.max_position_embeddings,
        "layer_norm_eps": c.layer_norm_eps,
        "pad_index": c.pad_token_id or 0,
        "pad_token_id": c.pad_token_id or 0,
        "is_encoder": True,
        "summary_type": "mean",
        "summary_use_proj": True,
        "summary_proj_to_labels": True,
        "summary_activation": None,
        "summary_first_dropout": dropout,
        "summary_last_dropout": 0.0,
        "tunesmith_source": {"model_type": "bert", "bert_config": c.to_dict()},
        **label_config,
    }
    config["tunesmith_source"]["bert_config"].pop("_name_or_path", None)
    return config, t, extra


def from_xlm(
    tensors: dict[str, torch.Tensor], extra: dict[str, torch.Tensor], num_layers: int
) -> dict[str, torch.Tensor]:
    """XLM-named tensors + extra -> our TaskModel state dict (backbone.encoder.* BERT names, head.*)."""
    e = "backbone.encoder."
    word = tensors["transformer.embeddings.weight"].clone()
    word[1] = extra["word_row1"]
    state = {
        f"{e}embeddings.word_embeddings.weight": word,
        f"{e}embeddings.position_embeddings.weight": extra["position_embeddings"],
        f"{e}embeddings.token_type_embeddings.weight": extra["token_type_embeddings"],
        f"{e}embeddings.LayerNorm.weight": tensors["transformer.layer_norm_emb.weight"],
        f"{e}embeddings.LayerNorm.bias": tensors["transformer.layer_norm_emb.bias"],
        "head.classifier.weight": tensors["sequence_summary.summary.weight"],
        "head.classifier.bias": tensors["sequence_summary.summary.bias"],
    }
    for xlm_name, bert_name in _layer_names(num_layers):
        state[e + bert_name] = tensors[xlm_name]
    return state


@FORMATS.register("xlm-mean")
class XlmMeanFormat:
    name = "xlm-mean"
    pipeline_loads = True

    def applies(self, model, task, meta: dict[str, Any]) -> bool:
        encoder_config = getattr(model.backbone.encoder, "config", None)
        return (
            not keeps_adapters(task, meta)
            and getattr(encoder_config, "model_type", None) == "bert"
            and can_use_xlm_layout(model.backbone, task.preprocessor)
        )

    def save(self, folder: Path, model, task, meta: dict[str, Any]) -> dict[str, Any]:
        xlm_config, tensors, extra = to_xlm(
            model.backbone.encoder, model.head.classifier, task.dropout, task.config_entries()
        )
        atomic_write_json(folder / "config.json", xlm_config)
        atomic_save_tensors(tensors, folder / "model.safetensors", self.name)
        atomic_save_tensors(extra, folder / EXTRA_FILE, self.name)
        _without_pad_token(task.preprocessor).save_pretrained(folder)
        return {}

    def architecture(self, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return read_json(folder / "config.json")["tunesmith_source"]["bert_config"]

    def load(self, folder: Path, meta: dict[str, Any], backbone_cls, task, architecture: dict[str, Any]):
        from ..tasks.base import TaskModel

        backbone = backbone_cls.from_config(architecture, meta)
        model = TaskModel(backbone, task.build_head(backbone))
        state = from_xlm(
            load_file(str(folder / "model.safetensors")),
            load_file(str(folder / EXTRA_FILE)),
            backbone.encoder.config.num_hidden_layers,
        )
        check_state(folder, model, state)
        return model

    def how_to_load(self, name: str, meta: dict[str, Any], task, example: str) -> list[str]:
        return (
            how_to_load_lines(name, example)
            + pipeline_lines(name, task, example)
            + [
                f"**Note:** this BERT model pools token states with `{meta.get('pooling')}` pooling, and transformers' "
                "BERT classification head cannot mean-pool. The folder is therefore saved as the equivalent "
                "`XLMForSequenceClassification` (same encoder maths, mean pooling, linear head; scores match tunesmith "
                "to ~1e-7). XLM's mean counts padding, so the saved tokenizer has no pad token and "
                "`pipeline(..., batch_size>1)` is refused: call the pipeline one text at a time (its default) and do "
                "not "
                "set a pad token on it. For batched inference use `tunesmith.load`, which masks padding correctly.",
                "",
            ]
        )


def _without_pad_token(tokenizer):
    """A copy whose pad token is unset, so batched `pipeline` calls fail instead of mis-scoring."""
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = None
    return tok
