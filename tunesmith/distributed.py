"""More than one training process: how a run learns its place among them, and what only one of them does.

A multi-process run is N copies of the same command (started by `--processes N`, `torchrun` or
`accelerate launch`), joined by accelerate over torch.distributed (gloo on CPU, NCCL on GPUs). Every
process trains on its share of each batch; the main process (rank 0) alone reads and checks the data,
prepares the run folder, evaluates, writes checkpoints and the run, and shares what it decided.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import ConfigError, TunesmithError

T = TypeVar("T")


def state():
    """accelerate's process state: joins the process group a launcher set up (WORLD_SIZE, RANK, ...)
    the first time, and fails loudly where it would otherwise train alone: a launcher asked for N
    processes but accelerate formed a group of another size (on CPU, accelerate falls back to one
    process per copy when the group cannot be formed, and each copy would train on all the data)."""
    import torch
    from accelerate import PartialState

    s = PartialState(cpu=not torch.accelerator.is_available())  # accelerate forms a CPU group only when told
    asked = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if s.num_processes != asked:
        raise ConfigError(
            f"the launcher started {asked} processes (WORLD_SIZE={asked}) but accelerate joined {s.num_processes}: "
            "each process would train alone on all the data. Check the launcher's environment (RANK, LOCAL_RANK, "
            "MASTER_ADDR, MASTER_PORT) or run `tunesmith train --processes N`"
        )
    return s


def world_size() -> int:
    """How many processes this run has (1 outside a launcher), without joining a group."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


def on_main(fn: Callable[[], T], what: str) -> T:
    """`fn()` on the main process only; every process gets its result, or raises the error it raised
    (so a bad data file stops all N processes with the same message, printed once). `what` names the
    step in the error the other processes raise when the main process fails unexpectedly."""
    if world_size() == 1:
        return fn()
    import torch.distributed as dist

    state()
    box: list[Any] = [None]
    failure = None
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except TunesmithError as e:
            box[0] = ("error", e)
        except BaseException as e:  # noqa: BLE001 - shared as a message, raised here as it was
            failure = e
            box[0] = ("error", RuntimeError(f"the main process failed while {what}: {type(e).__name__}: {e}"))
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if failure is not None:
        raise failure
    if kind == "error":
        value.from_main_process = dist.get_rank() > 0  # it printed there
        raise value
    return value


def share(value: T) -> T:
    """The main process's `value`, on every process (decisions made from what only it computed)."""
    if world_size() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every process's `value`, in rank order (on every process)."""
    if world_size() == 1:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def launch(argv: list[str], processes: int, wait_after_failure: float = 30.0) -> int:
    """`tunesmith ... --processes N`: the same command as N local processes joined over 127.0.0.1 (the
    variables torchrun sets: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), each with an equal share
    of this machine's cores (OMP_NUM_THREADS, unless set). SIGTERM is passed on to every process (each writes
    its checkpoint and stops); Ctrl-C reaches them from the terminal. When one process fails, the others get
    `wait_after_failure` seconds to fail too, then SIGTERM, then SIGKILL. -> the first failure's exit code
    (128 + signal where a process was killed), or 0."""
    import signal
    import socket
    import time

    if processes < 1:
        raise ConfigError(f"--processes {processes}: give 1 or more")
    if world_size() > 1:
        raise ConfigError("--processes starts processes itself: do not also run it under torchrun or accelerate launch")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with socket.socket() as s:  # a free port for the group's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "WORLD_SIZE": str(processes),
        "LOCAL_WORLD_SIZE": str(processes),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // processes)))
    procs = [
        subprocess.Popen([sys.executable, "-m", "tunesmith", *argv], env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
        for r in range(processes)
    ]
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, frame: [p.send_signal(signum) for p in procs]),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),  # the terminal sends it to every process
    }
    try:
        failed_at, code = None, 0
        while any(p.poll() is None for p in procs):
            failure = next((p.returncode for p in procs if p.returncode not in (None, 0)), None)
            if failure is not None and failed_at is None:
                failed_at, code = time.monotonic(), failure
            if failed_at is not None and time.monotonic() - failed_at > wait_after_failure:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                try:
                    for p in procs:
                        p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    for p in procs:
                        p.kill()
            time.sleep(0.1)
        code = code or next((p.returncode for p in procs if p.returncode != 0), 0)
        return 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def strip_processes(argv: list[str]) -> list[str]:
    """argv without its --processes option (the command each launched process runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--processes":
            skip = True
        elif not a.startswith("--processes="):
            out.append(a)
    return out
