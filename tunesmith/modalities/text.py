"""Text inputs: table columns -> tokenizer ids, once, unpadded (padding happens per batch)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..data.preflight import TextExamples, text_examples
from ..errors import DataError


class TextInputs:
    modality = "text"

    def read(self, path: str, data_cfg, role: str, require_labels: bool = True, reporter=None) -> TextExamples:
        return text_examples(path, data_cfg.text_column, data_cfg.label_column, data_cfg.text_pair_column,
                             require_labels, role)

    def load(self, model_dir: Path, model_cfg):
        from ..models.text_backbone import load_text_backbone, load_tokenizer

        backbone = load_text_backbone(model_dir, model_cfg.pooling, model_cfg.trust_remote_code)
        return backbone, load_tokenizer(model_dir, model_cfg.trust_remote_code)

    def task_kwargs(self, tokenizer, augment_cfg=None) -> dict[str, Any]:
        return {"pad_token_id": tokenizer.pad_token_id or 0}

    def encode(self, task, tokenizer, ex: TextExamples, max_length: int, augment: bool = False,
               reporter=None) -> list[dict]:
        return task.encode(tokenizer, ex.texts, ex.pairs, max_length)

    def examples_from_inputs(self, inputs: Sequence[Any], pairs: Sequence[str] | None = None) -> TextExamples:
        """What `predict` was given -> examples; every input must be non-empty text."""
        for i, t in enumerate(inputs):
            if not isinstance(t, str) or not t.strip():
                raise DataError(f"input {i + 1} is empty or not text: {t!r}")
        return TextExamples("input", list(inputs), list(pairs) if pairs is not None else None, None)
