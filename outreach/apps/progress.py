"""Progress bars for the CLI: the terminal side of `outreach.ingest.csvfile.Progress`.

The engine reports how far a read got and knows nothing of terminals; this draws it with rich,
on stderr so `--json` output on stdout stays clean, and only on a terminal (a log file or a pipe
would fill with bar redraws).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn


class FileProgress:
    """A transient bar per file read; draws nothing when its console is not a terminal.

    One instance serves several reads in turn (`patients import --events`): each `start` draws a
    new bar and `stop` removes it.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._console = console if console is not None else Console(stderr=True)
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def start(self, label: str, total: int) -> None:
        if not self._console.is_terminal:
            return
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=self._console,
            transient=True,
        )
        self._task = self._bar.add_task(label, total=total)
        self._bar.start()

    def advance(self, done: int, lines: int = 0) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, done)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = self._task = None
