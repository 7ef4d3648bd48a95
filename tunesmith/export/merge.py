"""`tunesmith export RUN --merge --out DIR`: fold LoRA adapters into plain weights.

The merged folder is written in a transformers-native layout where one exists, so it loads with
transformers alone (no peft). Merging is checked, never assumed: the same probe texts go through
the unmerged run, the merged folder via tunesmith, and (where transformers can load it) the merged
folder via transformers; the largest absolute logit difference must be within 1e-4 or nothing is
left behind.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import RunFolderError
from ..models.run_format import read_meta, save_model
from ..serve.predictor import load

PARITY_TOLERANCE = 1e-4
FALLBACK_PROBES = ["the plot was dull", "loved every minute of it", "an average day", "not what I ordered",
                   "absolutely wonderful service", "terrible, never again", "it arrived on time", "meh"]


def probe_texts(run: Path, n: int = 32) -> list[str]:
    """Real inputs from the run's own training file where it is still there, else fixed sentences."""
    import yaml

    from ..data.preflight import text_examples

    try:
        cfg = yaml.safe_load((run / "run_config.yaml").read_text(encoding="utf-8"))
        d = cfg["data"]
        ex = text_examples(d["train"], d["text_column"], d["label_column"], None, require_labels=False)
        return ex.texts[:n]
    except Exception:  # the training file may have moved; probes need only be text
        return FALLBACK_PROBES


@torch.no_grad()
def _transformers_logits(folder: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    max_length = read_meta(folder)["max_length"]
    # One text per call: the XLM layout counts padding in its mean, so never batch here.
    return torch.cat([model(**tok(t, return_tensors="pt", truncation=True, max_length=max_length)).logits
                      for t in texts])


def export_merged(run: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    run, out = Path(run), Path(out)
    meta = read_meta(run)
    if meta["layout"] != "lora-adapter":
        raise RunFolderError(f"{run} was trained with strategy {meta.get('strategy')!r}: its weights are already "
                             "plain, nothing to merge (--merge is for lora runs)")
    if out.exists() and any(out.iterdir()):
        if not overwrite or not (out / "tunesmith.json").is_file():
            raise RunFolderError(f"--out {out} is not empty; choose a new folder (or --overwrite a previous export)")
        shutil.rmtree(out)
    predictor = load(run)
    texts = probe_texts(run)
    before = predictor.logits(texts)

    from ..strategies.lora import merge_lora

    merge_lora(predictor.model.backbone.encoder)
    merged_meta = {k: v for k, v in meta.items()
                   if k not in ("lora", "lora_options", "base_model_fingerprint", "format_version", "layout",
                                "task", "labels", "pooling", "dropout")}
    merged_meta["merged_from"] = str(run.resolve())
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        layout = save_model(tmp, predictor.model, predictor.task, predictor.tokenizer, merged_meta)
        for f in ("README.md", "report.html", "metrics.json", "run_config.yaml"):
            if (run / f).is_file():
                shutil.copy2(run / f, tmp / f)
        diffs = {"tunesmith (merged folder)": float((load(tmp).logits(texts) - before).abs().max())}
        if layout in ("native", "xlm-mean"):
            diffs["transformers (merged folder, no peft)"] = float((_transformers_logits(tmp, texts) - before).abs().max())
        worst = max(diffs.values())
        if worst > PARITY_TOLERANCE:
            raise RunFolderError(f"merged weights disagree with the adapters: max |logit diff| {worst:.2e} > "
                                 f"{PARITY_TOLERANCE:g} ({diffs}); nothing was written")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": out, "layout": layout, "probes": len(texts), "max_abs_logit_diff": diffs}
