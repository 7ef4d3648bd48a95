"""Errors a user can fix. The CLI prints these without a traceback and exits non-zero."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path


class TunesmithError(Exception):
    """A mistake in the user's input, config, data or model folder, with the fix in the message."""

    # raised again in the other processes of a multi-process run after the main one printed it (distributed.py)
    from_main_process: bool = False


class ConfigError(TunesmithError):
    """A config key or value is unknown or invalid."""


class DataError(TunesmithError):
    """A data file is missing, unreadable or holds rows we cannot train on."""


class ModelError(TunesmithError):
    """A pre-trained model cannot be found or loaded offline."""


class RunFolderError(TunesmithError):
    """The output folder is not in a state this command can use."""


class ExportError(TunesmithError):
    """A run cannot be exported as asked, or the export disagrees with the run (nothing is written)."""


class RequestError(TunesmithError):
    """A request the server refuses (HTTP 4xx): `field` names the part of the request that is wrong."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


class Interrupted(TunesmithError):
    """Training stopped on SIGTERM or SIGINT after writing a checkpoint; `--resume` continues it."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class OutputError(TunesmithError):
    """Writing the run's output failed for a reason outside the run: a full disk, a read-only file system or a
    folder this user may not write. What was already written completely (earlier checkpoints) is kept."""


_OUTPUT_ERRNOS = {
    errno.ENOSPC: ("no space left on device", "Free some space there, or give --out a folder on a disk with room"),
    errno.EDQUOT: ("disk quota exceeded", "Free some space there, or give --out a folder on a disk with room"),
    errno.EROFS: ("read-only file system", "Make it writable, or give --out a folder on a writable disk"),
    errno.EACCES: ("permission denied", "Make it writable for this user, or give --out a folder you can write"),
    errno.EPERM: ("operation not permitted", "Make it writable for this user, or give --out a folder you can write"),
}
# How libraries that write files themselves (safetensors, torch.save) word these errors: they raise their own
# exception types, with the OS's message (or none at all) in the text.
_OUTPUT_TEXTS = {
    errno.ENOSPC: ("os error 28", "no space left on device"),
    errno.EDQUOT: ("os error 122", "disk quota exceeded"),
    errno.EROFS: ("os error 30", "read-only file system"),
    errno.EACCES: ("os error 13", "permission denied"),
}


def _output_errno(exc: BaseException, path: Path) -> int | None:
    """Which of _OUTPUT_ERRNOS made writing under `path` fail, or None for any other failure. Looks at the
    error itself, then its text, then the file system of `path` (torch.save only says 'file write failed')."""
    if isinstance(exc, OSError) and exc.errno in _OUTPUT_ERRNOS:
        return exc.errno
    text = str(exc).lower()
    for code, marks in _OUTPUT_TEXTS.items():
        if any(m in text for m in marks):
            return code
    if isinstance(exc, OSError | RuntimeError) or type(exc).__name__ == "SafetensorError":
        folder = next((p for p in (path, *path.parents) if p.exists()), None)
        if folder is not None:
            fs = os.statvfs(folder)
            if fs.f_flag & os.ST_RDONLY:
                return errno.EROFS
            if fs.f_bavail * fs.f_frsize < 1 << 20:  # under 1 MiB left: what a failed large write leaves behind
                return errno.ENOSPC
    return None


def output_error(exc: BaseException, path: Path | str, what: str, then: str = "") -> OutputError | None:
    """An OutputError saying which `path` could not be written and what to do, when `exc` is a full disk, a
    read-only file system or a permission refused; None for any other error (re-raise that one as it is).
    `what`: what was being written ('the checkpoint of step 6'); `then`: what to do once fixed."""
    code = _output_errno(exc, Path(path))
    if code is None:
        return None
    reason, fix = _OUTPUT_ERRNOS[code]
    return OutputError(f"cannot write {what} in {path}: {reason}. {fix}" + (f"; then {then}" if then else "") + ".")


def os_output_error(exc: OSError) -> OutputError | None:
    """An OutputError for an OSError of a full disk, a read-only file system or a refused permission that
    reached the CLI from code that does not translate its own (the file it names, and the fix); else None."""
    if exc.errno not in _OUTPUT_ERRNOS:
        return None
    reason, fix = _OUTPUT_ERRNOS[exc.errno]
    where = f" {exc.filename}" if exc.filename else ""
    return OutputError(f"cannot write{where}: {reason}. {fix}, then run the command again (--resume continues a run).")


@contextlib.contextmanager
def writing_output(path: Path | str, what: str, then: str = "") -> Iterator[None]:
    """Turn a full disk, a read-only file system or a refused permission while writing under `path` into an
    OutputError that names the path and the fix; any other error passes through unchanged."""
    try:
        yield
    except TunesmithError:
        raise
    except Exception as e:
        err = output_error(e, path, what, then)
        if err is None:
            raise
        raise err from e
