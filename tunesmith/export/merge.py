"""`tunesmith export RUN --merge --out DIR`: fold LoRA adapters into plain weights.

The merged folder is written in a transformers-native layout where one exists, so it loads with
transformers alone (no peft). Merging is checked, never assumed: the same probe inputs go through
the unmerged run, the merged folder via tunesmith, and (where its layout is one transformers loads)
the merged folder via `transformers.pipeline`; the largest difference (logits, or differing
transcripts) must be within 1e-4 or nothing is left behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from ..formats import format_of, pipeline_outputs, read_meta, save_run
from ..serve.predictor import load
from . import check_out, publish

PARITY_TOLERANCE = 1e-4
# what a merged folder's tunesmith.json does not carry over: the adapters, and what save_run writes anew
_NOT_MERGED = (
    "lora",
    "lora_options",
    "base_model_fingerprint",
    "format_version",
    "layout",
    "task",
    "labels",
    "pooling",
    "dropout",
    "backbone",
    "task_state",
    "format_note",
    "lora_merged",
)


def probe_inputs(run: Path, predictor, n: int = 32) -> list:
    """Real inputs from the run's own training data where it is still there, else made-up ones."""
    from ..api import saved_data_config

    try:
        dcfg = saved_data_config(run)
        examples = predictor.modality.read(dcfg.train, dcfg, "probe data", require_labels=False)
    except Exception:  # the training data may have moved; probes need only be valid inputs
        examples = None
    return predictor.modality.probe_inputs(examples, n)


def export_merged(run: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    run, out = Path(run), Path(out)
    meta = read_meta(run)
    if meta.get("lora_merged"):
        raise RunFolderError(
            f"{run}: its LoRA adapters were merged into plain weights when the run was saved; "
            "nothing to merge, the folder already loads as it is"
        )
    if meta.get("lora") is None:
        raise RunFolderError(
            f"{run} was trained with strategy {meta.get('strategy')!r}: its weights are already "
            "plain, nothing to merge (--merge is for lora runs)"
        )
    check_out(out, overwrite)
    predictor = load(run, merge_adapters=False)
    probes = probe_inputs(run, predictor)
    task = predictor.task
    before = task.parity_view(predictor.outputs(probes))

    from ..strategies.lora import merge_lora

    merge_lora(predictor.model.backbone.encoder)
    merged_meta = {k: v for k, v in meta.items() if k not in _NOT_MERGED}
    merged_meta["merged_from"] = str(run.resolve())
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        layout = save_run(tmp, predictor.model, task, merged_meta)
        for f in ("README.md", "report.html", "metrics.json", "run_config.yaml"):
            if (run / f).is_file():
                shutil.copy2(run / f, tmp / f)
        reloaded = load(tmp)
        diffs = {
            "tunesmith (merged folder)": task.output_difference(before, task.parity_view(reloaded.outputs(probes)))
        }
        theirs = pipeline_outputs(tmp, task, predictor.modality, probes)
        if theirs is not None:
            diffs["transformers.pipeline (merged folder, no peft)"] = task.output_difference(before, theirs)
        worst = max(diffs.values())
        if worst > PARITY_TOLERANCE:
            raise RunFolderError(
                f"merged weights disagree with the adapters: max difference {worst:.2e} > "
                f"{PARITY_TOLERANCE:g} ({diffs}); nothing was written"
            )
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "out": out,
        "layout": layout,
        "probes": len(probes),
        "max_abs_logit_diff": diffs,
        "pipeline_loads": format_of(read_meta(out)).pipeline_loads,
    }
