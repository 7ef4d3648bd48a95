"""Faults a run survives: a damaged newest checkpoint (resume falls back to the one before it, with a
warning, and still ends bit-identical to an uninterrupted run), a full disk and a read-only output folder
(a clear error naming the path and the fix, a non-zero exit, the checkpoints already written intact and
resumable, no temp folder, no finished-looking run folder), --resume with a changed config, and (slow)
repeated SIGKILLs (bench/soak.py).

One uninterrupted run and one run SIGKILLed after its checkpoint of step 6 (as tests/test_resume.py kills
it) are made once per module; each test works on a copy of the killed one. The disk tests mount small
tmpfs folders (root only: skipped otherwise)."""

import errno
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from test_resume import DEFAULT_TASK, env, run_killed, train_args

from tunesmith.cli import main
from tunesmith.errors import OutputError, output_error
from tunesmith.tasks import TASKS
from tunesmith.training.checkpoint import TEMP, usable_checkpoint

KILLED_AT = 6  # checkpoints every 3 steps, two kept: step 3 is the one to fall back to
ROOT = Path(__file__).resolve().parent.parent


def args_for(ex, out: Path, *extra: str) -> list[str]:
    return train_args(DEFAULT_TASK, ex, out, "full", "--set", "train.keep_checkpoints=true", *extra)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The tiny example, an uninterrupted run (`ref`) and a run killed after step 6's checkpoint (`killed`)."""
    tmp = tmp_path_factory.mktemp("faults")
    ex = TASKS.get(DEFAULT_TASK).tiny_example(tmp / "example")
    environ = env(tmp)
    os.environ["TUNESMITH_CACHE"] = environ["TUNESMITH_CACHE"]  # the in-process runs share the feature cache
    ref, killed = tmp / "ref", tmp / "killed"
    assert main(args_for(ex, ref)) == 0
    run_killed(args_for(ex, killed), killed, environ, step=KILLED_AT)
    return SimpleNamespace(ex=ex, ref=ref, killed=killed, environ=environ)


def resume(runs, out: Path, capsys) -> tuple[int, str]:
    """`tunesmith train --resume` into `out`, in this process: (exit code, what it printed to stderr,
    warnings issued through `warnings` included)."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main(args_for(runs.ex, out, "--resume"))
    err = capsys.readouterr().err + "".join(f"\nwarning: {w.message}" for w in caught)
    return rc, err


def assert_same_as_ref(runs, out: Path, resumed_from: int) -> None:
    """The resumed run resumed from `resumed_from` and ended as the uninterrupted one: the same history and
    validation metrics, every weight file bit-identical."""
    m_ref, m_out = (json.loads((d / "metrics.json").read_text()) for d in (runs.ref, out))
    assert m_out["train"]["resumed_from_step"] == resumed_from
    assert m_out["history"] == m_ref["history"] and m_out["validation"] == m_ref["validation"]
    names = sorted(p.name for p in runs.ref.glob("*.safetensors"))
    assert names and names == sorted(p.name for p in out.glob("*.safetensors"))
    for name in names:
        w_ref, w_out = load_file(str(runs.ref / name)), load_file(str(out / name))
        assert w_ref.keys() == w_out.keys() and all(torch.equal(w_ref[k], w_out[k]) for k in w_ref), name


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of the run folder `src` at `dst`, its config's `out` moved with it (--resume compares configs)."""
    shutil.copytree(src, dst)
    config = dst / "run_config.yaml"
    config.write_text(config.read_text().replace(str(src), str(dst)))
    return dst


def checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def step(n: int) -> str:
    return f"step-{n:08d}"


# -- a damaged newest checkpoint ------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _flip_middle(path: Path) -> None:
    """Bytes inside the tensor data: the file still loads, only the checksum written with it tells."""
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(b"\xff" * 64)


DAMAGE = {
    "trainable-truncated": ("trainable.safetensors", _truncate),
    "optimizer-corrupt": ("optimizer.pt", _flip_middle),
    "state-corrupt": ("state.json", lambda p: p.write_text('{"epoch": 0, "st')),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_resumes_from_the_one_before(damage, runs, tmp_path, capsys):
    out = tmp_path / "run"
    copy_run(runs.killed, out)
    name, spoil = DAMAGE[damage]
    spoil(out / "checkpoints" / step(KILLED_AT) / name)
    assert usable_checkpoint(out / "checkpoints")[0].name == step(3)
    rc, err = resume(runs, out, capsys)
    assert rc == 0, err
    assert f"checkpoint {step(KILLED_AT)} is damaged" in err and name in err and f"resuming from {step(3)}" in err
    assert_same_as_ref(runs, out, resumed_from=3)


def test_no_usable_checkpoint_is_refused_naming_the_damaged_ones(runs, tmp_path, capsys):
    out = tmp_path / "run"
    copy_run(runs.killed, out)
    _truncate(out / "checkpoints" / step(3) / "trainable.safetensors")
    (out / "checkpoints" / step(KILLED_AT) / "optimizer.pt").unlink()
    rc, err = resume(runs, out, capsys)
    assert rc == 2 and "Traceback" not in err
    assert "no usable checkpoint" in err and "--overwrite" in err
    assert f"{step(3)}: trainable.safetensors" in err and f"{step(KILLED_AT)}: optimizer.pt is missing" in err
    assert not (out / "metrics.json").exists()


# -- full disks and read-only folders ---------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size, read_only) -> a fresh tmpfs folder under tmp_path, unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "64m", read_only: bool = False) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("a full disk or read-only folder is made by mounting a small tmpfs, which needs root")
        opts = f"size={size}" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"mounting a tmpfs was refused ({r.stderr.strip()}): no full disk or read-only folder to test")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=False)


def remount(folder: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(folder)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill the tmpfs `disk` until about `leave` bytes are free; returns the filler file (delete it to free)."""
    fs = os.statvfs(disk)
    filler = disk / "filler"
    with filler.open("wb") as f:
        f.write(b"\0" * (fs.f_bavail * fs.f_frsize - leave))
    return filler


def assert_clean_failure(out: Path, err: str, rc: int, words: str, intact: int) -> None:
    assert rc == 2 and "Traceback" not in err, err
    assert words in err and str(out) in err and "--resume" in err, err
    assert not (out / "metrics.json").exists()
    assert not list((out / "checkpoints").glob(f"{TEMP}*"))  # no temp folder left behind
    path, problems = usable_checkpoint(out / "checkpoints")
    assert path is not None and path.name == step(intact) and not problems


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_last_one_and_resumes_once_there_is_room(runs, tmpfs, capsys):
    disk = tmpfs("disk")
    out = disk / "run"
    copy_run(runs.killed, out)
    # Room for trainable and best weights, not for optimizer.pt (torch.save says only "file write failed").
    size = sum(p.stat().st_size for p in (out / "checkpoints" / step(KILLED_AT)).iterdir())
    filler = fill(disk, leave=size * 2 // 3)
    rc, err = resume(runs, out, capsys)
    assert_clean_failure(out, err, rc, "no space left on device", intact=KILLED_AT)
    assert f"checkpoint of step {KILLED_AT + 3}" in err
    filler.unlink()
    rc, err = resume(runs, out, capsys)
    assert rc == 0, err
    assert_same_as_ref(runs, out, resumed_from=KILLED_AT)


def test_a_full_disk_while_writing_the_run_folder_leaves_it_unfinished_and_resumable(runs, tmpfs, capsys):
    """Killed after its last checkpoint: a resume only evaluates and writes the run folder, which fills the disk."""
    disk = tmpfs("disk")
    out = disk / "run"
    copy_run(runs.ref, out)  # the finished run, made unfinished: its checkpoints and config only
    for p in out.iterdir():
        if p.is_dir() and p.name != "checkpoints":
            shutil.rmtree(p)
        elif p.is_file() and p.name != "run_config.yaml":
            p.unlink()
    last = int(checkpoints(out)[-1][len("step-") :])
    filler = fill(disk, leave=32 * 1024)  # less than the model's weights
    before = sorted(p.name for p in out.iterdir())
    rc, err = resume(runs, out, capsys)
    assert_clean_failure(out, err, rc, "no space left on device", intact=last)
    assert "the run folder" in err
    assert sorted(p.name for p in out.iterdir()) == before  # the half-written model and the rest removed
    filler.unlink()
    rc, err = resume(runs, out, capsys)
    assert rc == 0, err
    assert_same_as_ref(runs, out, resumed_from=last)


def test_a_read_only_output_folder_is_refused_with_the_path(runs, tmpfs, capsys):
    disk = tmpfs("ro", read_only=True)
    out = disk / "run"
    capsys.readouterr()
    assert main(args_for(runs.ex, out)) == 2
    err = capsys.readouterr().err
    assert "read-only file system" in err and str(out) in err and "Traceback" not in err
    assert not out.exists()


def test_a_folder_made_read_only_mid_run_keeps_its_checkpoints_and_resumes_once_writable(runs, tmpfs, capsys):
    disk = tmpfs("disk")
    out = disk / "run"
    copy_run(runs.killed, out)
    remount(disk, "ro")
    rc, err = resume(runs, out, capsys)
    assert_clean_failure(out, err, rc, "read-only file system", intact=KILLED_AT)
    remount(disk, "rw")
    rc, err = resume(runs, out, capsys)
    assert rc == 0, err
    assert_same_as_ref(runs, out, resumed_from=KILLED_AT)


def test_output_errors_are_told_from_other_errors(tmp_path):
    full = output_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path, "the report")
    assert isinstance(full, OutputError) and "no space left on device" in str(full) and str(tmp_path) in str(full)
    rust = RuntimeError("Error while serializing: I/O error: Read-only file system (os error 30)")
    assert "read-only" in str(output_error(rust, tmp_path, "weights"))
    assert output_error(OSError(errno.ENOENT, "No such file"), tmp_path, "x") is None
    assert output_error(ValueError("bad value"), tmp_path, "x") is None


def test_an_oserror_of_a_full_disk_reaching_the_cli_is_an_error_message_not_a_traceback(monkeypatch, capsys):
    import tunesmith.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/report.html")

    monkeypatch.setattr(cli, "_models", full)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and "/somewhere/report.html" in err


# -- --resume with a changed config ---------------------------------------------------------------------
def test_resume_with_a_changed_config_is_refused_naming_every_changed_key(runs, tmp_path, capsys):
    out = tmp_path / "run"
    copy_run(runs.killed, out)
    listing = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    changed = args_for(runs.ex, out, "--resume")
    changed[changed.index("--lr") + 1] = "5e-4"
    changed[changed.index("--seed") + 1] = "4"
    capsys.readouterr()
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert "config differs" in err and "train.lr" in err and "train.seed" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == listing  # nothing in the run was touched


# -- repeated SIGKILLs -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_soak_three_sigkills_end_bit_identical(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--kills", "3", "--work", str(tmp_path), "--no-write"],
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "identical: yes" in r.stdout
