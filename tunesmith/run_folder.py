"""What may be written into an --out folder, and when a run in it counts as finished.

A run is finished only when metrics.json exists: it is written last. Refuse to mix runs: a folder
with a finished run needs --overwrite, an unfinished one --resume (same config) or --overwrite,
and a folder that is not a tunesmith run is never deleted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from .config import RunConfig, config_to_yaml
from .errors import RunFolderError, writing_output

CONFIG_FILE = "run_config.yaml"
METRICS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"
CHOICE_FILE = "strategy_choice.json"  # what a strategy that chooses (auto) measured and picked


def _is_run(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file()


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    diffs = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            diffs.append(f"{prefix}{k}: saved {va!r}, now {vb!r}")
    return diffs


def check(folder: Path, resume: bool, overwrite: bool) -> None:
    """The refusals of `prepare` that need no config, raised before any work (e.g. a race of candidate
    runs) is spent on a run that could not be written."""
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {folder} is a file; give a folder")
    occupied = folder.is_dir() and any(folder.iterdir())
    if occupied and not _is_run(folder):
        raise RunFolderError(
            f"--out {folder} is not empty and holds no tunesmith run; tunesmith will not write into it or delete "
            "it. Choose a new or empty folder."
        )
    finished = (folder / METRICS_FILE).is_file()
    if occupied and resume and finished:
        raise RunFolderError(
            f"{folder} holds a finished run: nothing to resume. Use --overwrite to train it again from scratch."
        )
    if occupied and not resume and not overwrite:
        what = "a finished run" if finished else "an unfinished run (no metrics.json)"
        hint = "" if finished else " Use --resume to continue it, or"
        raise RunFolderError(
            f"--out {folder} already holds {what}.{hint} Use --overwrite to replace it, or choose another --out."
        )


def prepare(folder: Path, cfg: RunConfig, resume: bool, overwrite: bool) -> bool:
    """Make `folder` ready for this run. Returns True when an unfinished run is being resumed."""
    check(folder, resume, overwrite)
    occupied = folder.is_dir() and any(folder.iterdir())
    if occupied and resume:
        saved = yaml.safe_load((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        diffs = _config_diff(saved, cfg.model_dump(mode="json"))
        if diffs:
            raise RunFolderError(
                f"--resume: the config differs from the unfinished run in {folder}:\n  "
                + "\n  ".join(diffs)
                + "\nResume with the same config, or use --overwrite to start over."
            )
        return True
    with writing_output(folder, "the run folder", "run the command again"):
        if occupied:  # check() let it through: --overwrite
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(config_to_yaml(cfg), encoding="utf-8")
    return False
