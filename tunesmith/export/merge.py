"""`tunesmith export RUN --merge --out DIR`: fold LoRA adapters into plain weights.

The merged folder is written in a transformers-native layout where one exists, so it loads with
transformers alone (no peft). Merging is checked, never assumed: the same probe inputs go through
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


def probe_inputs(run: Path, predictor, n: int = 32) -> list:
    """Real inputs from the run's own training data where it is still there, else fixed ones."""
    from ..api import saved_data_config

    try:
        ex = predictor.inputs.read(saved_data_config(run).train, saved_data_config(run), "probe data",
                                   require_labels=False)
        return (ex.items if predictor.inputs.modality in ("image", "audio") else ex.texts)[:n]
    except Exception:  # the training data may have moved; probes need only be valid inputs
        if predictor.inputs.modality == "image":
            return _synthetic_images(8)
        if predictor.inputs.modality == "audio":
            return _synthetic_clips(8)
        return FALLBACK_PROBES


def _synthetic_images(n: int) -> list[bytes]:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _synthetic_clips(n: int) -> list[bytes]:
    """Half-second WAVs (tones of rising pitch in noise) at 16 kHz: valid, non-silent audio."""
    import io

    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    out = []
    for i in range(n):
        buf = io.BytesIO()
        x = 0.3 * np.sin(2 * np.pi * 200 * (i + 1) * t) + rng.normal(0, 0.05, t.shape)
        sf.write(buf, x.astype("float32"), 16000, format="WAV")
        out.append(buf.getvalue())
    return out


@torch.no_grad()
def _transformers_logits(folder: Path, inputs: list, modality: str) -> torch.Tensor:
    if modality == "audio":
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        from ..data.audio import load_audio

        model = AutoModelForAudioClassification.from_pretrained(folder, local_files_only=True).eval()
        fe = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        rate = int(fe.sampling_rate)
        # one clip per call, as pipeline("audio-classification") runs them
        return torch.cat([model(**fe(load_audio(x, f"probe {i + 1}", rate), sampling_rate=rate,
                                     return_tensors="pt")).logits for i, x in enumerate(inputs)])
    if modality == "image":
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        from ..data.images import load_image

        model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).eval()
        proc = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        return model(**proc(images=[load_image(x) for x in inputs], return_tensors="pt")).logits
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    max_length = read_meta(folder)["max_length"]
    # One text per call: the XLM layout counts padding in its mean, so never batch here.
    return torch.cat([model(**tok(t, return_tensors="pt", truncation=True, max_length=max_length)).logits
                      for t in inputs])


def export_merged(run: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    run, out = Path(run), Path(out)
    meta = read_meta(run)
    if meta.get("lora_merged"):  # speech recognition runs save LoRA merged (speech_backbone.py)
        raise RunFolderError(f"{run}: its LoRA adapters were merged into plain weights when the run was saved; "
                             "nothing to merge, the folder already loads with transformers alone")
    if meta["layout"] != "lora-adapter":
        raise RunFolderError(f"{run} was trained with strategy {meta.get('strategy')!r}: its weights are already "
                             "plain, nothing to merge (--merge is for lora runs)")
    if out.exists() and any(out.iterdir()):
        if not overwrite or not (out / "tunesmith.json").is_file():
            raise RunFolderError(f"--out {out} is not empty; choose a new folder (or --overwrite a previous export)")
        shutil.rmtree(out)
    predictor = load(run)
    texts = probe_inputs(run, predictor)
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
        layout = save_model(tmp, predictor.model, predictor.task, predictor.preprocessor, merged_meta)
        for f in ("README.md", "report.html", "metrics.json", "run_config.yaml"):
            if (run / f).is_file():
                shutil.copy2(run / f, tmp / f)
        diffs = {"tunesmith (merged folder)": float((load(tmp).logits(texts) - before).abs().max())}
        if layout in ("native", "xlm-mean"):
            theirs = _transformers_logits(tmp, texts, predictor.inputs.modality)
            diffs["transformers (merged folder, no peft)"] = float((theirs - before).abs().max())
        worst = max(diffs.values())
        if worst > PARITY_TOLERANCE:
            raise RunFolderError(f"merged weights disagree with the adapters: max |logit diff| {worst:.2e} > "
                                 f"{PARITY_TOLERANCE:g} ({diffs}); nothing was written")
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"out": out, "layout": layout, "probes": len(texts), "max_abs_logit_diff": diffs}
