"""Progress bars (rich) with throughput and ETA, and the run's console; --quiet silences both but
never warnings or errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _Rate(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "-/s", style="cyan")


class Reporter:
    """`silent`: nothing at all, warnings included (the processes of a multi-process run but the main one, which
    speaks for all)."""

    def __init__(self, quiet: bool = False, silent: bool = False):
        self.quiet, self.silent = quiet or silent, silent
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(msg)

    def warn(self, msg: str) -> None:
        if not self.silent:
            self.console.print(f"[yellow]warning:[/yellow] {msg}")

    @contextlib.contextmanager
    def bar(self, description: str, total: int, unit: str = "samples") -> Iterator[_Bar]:
        if self.quiet:
            yield _Bar(None, None)
            return
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TextColumn("{task.fields[postfix]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        with progress:
            tid = progress.add_task(description, total=total, unit=unit, postfix="")
            yield _Bar(progress, tid)


class _Bar:
    def __init__(self, progress, tid):
        self.progress, self.tid = progress, tid

    def advance(self, n: int = 1, postfix: str | None = None) -> None:
        if self.progress is None:
            return
        if postfix is None:
            self.progress.advance(self.tid, n)
        else:
            self.progress.update(self.tid, advance=n, postfix=postfix)
