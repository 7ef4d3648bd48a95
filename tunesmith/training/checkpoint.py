"""Atomic, resumable checkpoints: written to a temp folder, then renamed into place; resuming checks that a
checkpoint reads whole before it is loaded, and falls back to the one before a damaged one.

A checkpoint holds everything the loop needs to continue bit-for-bit: trainable weights, the best
weights so far, optimizer and scheduler state, RNG states and the loop's counters and history.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import RunFolderError, output_error, writing_output

PREFIX = "step-"
TEMP = ".tmp-"  # a checkpoint being written: renamed to its PREFIX name once whole
TRAINABLE, BEST, OPTIMIZER, STATE = "trainable.safetensors", "best.safetensors", "optimizer.pt", "state.json"
MANIFEST = "files.json"  # each file's size and sha256: damage inside tensor data is found too


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    np_state = state["numpy"]
    state["numpy"] = [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]
    py = state["python"]
    state["python"] = [py[0], list(py[1]), py[2]]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    best: dict[str, torch.Tensor] | None,
    optimizer,
    scheduler,
    loop_state: dict[str, Any],
    keep: int = 2,
    rng: Any = None,
) -> Path:
    """Write the checkpoint of `step` into a temp folder, then rename it into place, and keep the newest `keep`
    (two by default: should the newest be damaged, resuming falls back to the one before). A full disk or a
    read-only folder raises OutputError and leaves no temp folder; the checkpoints already written stay intact.
    `rng`: the RNG states to save (a multi-process run gathers every rank's); None: this process's."""
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{TEMP}{PREFIX}{step:08d}-{os.getpid()}"
    then = "rerun with --resume: it continues from the last checkpoint written"
    with writing_output(root, f"the checkpoint of step {step}", then):
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        _save_tensors(weights, tmp / TRAINABLE)
        if best is not None:
            _save_tensors(best, tmp / BEST)
        blob = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        torch.save({**blob, "rng": rng if rng is not None else rng_state()}, tmp / OPTIMIZER)
        (tmp / MANIFEST).write_text(json.dumps(_manifest(tmp), indent=1), encoding="utf-8")
        (tmp / STATE).write_text(json.dumps(loop_state, indent=1), encoding="utf-8")  # last: marks it whole
        if final.exists():  # a damaged one skipped on resume, written again now
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as e:
        err = output_error(e, root, f"the checkpoint of step {step}", then) if isinstance(e, Exception) else None
        shutil.rmtree(tmp, ignore_errors=True)
        if err is not None:
            raise err from e
        raise
    # Checkpoints after this step are the damaged ones a resume skipped (it resumed from an earlier one).
    others = [p for p in checkpoint_folders(root) if p != final]
    older = [p for p in others if _step(p) < step]
    for old in [p for p in others if _step(p) > step] + older[: max(len(older) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f"{TEMP}{PREFIX}*"):  # left by a process killed while writing
        if not _alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    return final


def _step(path: Path) -> int:
    return int(path.name[len(PREFIX) :])


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def checkpoint_folders(root: Path) -> list[Path]:
    """Every checkpoint folder renamed into place, oldest first, usable or not."""
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()),
        key=_step,
    )


def complete_checkpoints(root: Path) -> list[Path]:
    return [p for p in checkpoint_folders(root) if (p / STATE).is_file()]


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _manifest(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(folder.iterdir()) if p.is_file()}


def _manifest_problem(folder: Path) -> str | None:
    """Why a file of the checkpoint differs from what was written, by the sizes and sha256 sums saved with it;
    None when all match, or for a checkpoint written before it kept them (its files are checked by reading)."""
    if not (folder / MANIFEST).exists():
        return None
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"{MANIFEST} does not parse ({e})"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{name} has {size} bytes, {want['bytes']} were written"
        if _sha256(path) != want["sha256"]:
            return f"{name} differs from what was written (its sha256 sum)"
    return None


def _safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file at `path` cannot be read whole, or None: its header parses, its size is the
    one the header describes (a truncated file is not), and safetensors opens it."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            n = int.from_bytes(f.read(8), "little") if size >= 8 else 0
            if size < 8 or 8 + n > size:
                return f"{path.name} is truncated ({size} bytes, shorter than its header)"
            header = json.loads(f.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
        expected = 8 + n + max(ends, default=0)
        if size != expected:
            return f"{path.name} has {size} bytes; its header describes {expected}"
        with safe_open(str(path), framework="pt") as st:
            list(st.keys())
    except FileNotFoundError:
        return f"{path.name} is missing"
    except Exception as e:  # unreadable, not JSON, offsets missing: damaged either way
        return f"{path.name} cannot be read ({type(e).__name__}: {e})"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from, or None when every file in it reads whole:
    state.json parses, every file has the size and sha256 sum written with it, the safetensors files open
    with the sizes their headers give, optimizer.pt loads."""
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{STATE} is missing"
    except (OSError, ValueError) as e:
        return f"{STATE} does not parse ({e})"
    if not isinstance(state, dict) or "step" not in state:
        return f"{STATE} holds no loop state"
    problem = _manifest_problem(path)
    if problem is not None:
        return problem
    for name in (TRAINABLE, BEST):
        if name == TRAINABLE or (path / name).exists():
            problem = _safetensors_problem(path / name)
            if problem is not None:
                return problem
    try:
        blob = torch.load(path / OPTIMIZER, weights_only=True)
    except FileNotFoundError:
        return f"{OPTIMIZER} is missing"
    except Exception as e:
        return f"{OPTIMIZER} does not load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if not isinstance(blob, dict) or not {"optimizer", "scheduler", "rng"} <= blob.keys():
        return f"{OPTIMIZER} lacks the optimizer, scheduler or RNG state"
    return None


def usable_checkpoint(root: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint under `root` whose files all read whole, and a warning for each newer one that
    is damaged (skipped, never loaded). (None, []) when there is none at all; RunFolderError when there are
    checkpoints but every one is damaged."""
    found = checkpoint_folders(root)
    damaged: list[tuple[Path, str]] = []
    for path in reversed(found):
        problem = checkpoint_problem(path)
        if problem is None:
            skipped = [
                f"checkpoint {p.name} is damaged ({why}): skipped, resuming from {path.name}" for p, why in damaged
            ]
            return path, skipped
        damaged.append((path, problem))
    if damaged:
        raise RunFolderError(
            f"--resume: no usable checkpoint in {root}; every one is damaged:\n  "
            + "\n  ".join(f"{p.name}: {why}" for p, why in damaged)
            + "\nUse --overwrite to start the run over."
        )
    return None, []


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped: the run resumes from an earlier one."""


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint to resume from: `usable_checkpoint`'s, its warnings issued as CheckpointWarning (a caller
    with a console of its own calls usable_checkpoint and prints them itself)."""
    path, problems = usable_checkpoint(root)
    for problem in problems:
        warnings.warn(problem, CheckpointWarning, stacklevel=2)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    blob = torch.load(path / OPTIMIZER, weights_only=True)  # our own file, still never unpickled
    return {
        "weights": load_file(str(path / TRAINABLE)),
        "best": load_file(str(path / BEST)) if (path / BEST).is_file() else None,
        "optimizer": blob["optimizer"],
        "scheduler": blob["scheduler"],
        "rng": blob["rng"],
        "state": json.loads((path / STATE).read_text(encoding="utf-8")),
    }
