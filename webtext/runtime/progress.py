"""Live progress of a local run: done/total, rate and ETA per stage, while the pipeline works.

Beam's metrics are only readable once a local pipeline has finished, and the direct runner's workers are
separate processes, so workers report through small files instead: `tick(stage, n)` in a DoFn adds to a
per-process count file in the directory named by WEBTEXT_PROGRESS_DIR (inherited by the worker processes),
at most a few times a second. `Progress(stage, total)` in the launching process shows the sum with rich.
Where the variable is unset (Dataflow, tests) `tick` costs one dictionary lookup and does nothing.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

ENV = "WEBTEXT_PROGRESS_DIR"
_FLUSH_SECONDS = 0.5
_directory: str | None = None   # where _counts go; a new directory (a new run) starts them from 0
_counts: dict[str, int] = {}    # stage -> items this process has done for the run shown in _directory
_last_flush = 0.0


def directory() -> str | None:
    """Where this process reports progress now (None: nowhere)."""
    return os.environ.get(ENV)


def report_to(where: str | None) -> None:
    """Report progress to `where` from now on (a long-lived worker process takes each task's)."""
    if where:
        os.environ[ENV] = where
    else:
        os.environ.pop(ENV, None)


def tick(stage: str, n: int = 1) -> None:
    global _last_flush, _directory
    where = directory()
    if not where:
        return
    if where != _directory:
        _directory = where
        _counts.clear()
    _counts[stage] = _counts.get(stage, 0) + n
    now = time.monotonic()
    if now - _last_flush >= _FLUSH_SECONDS:
        _last_flush = now
        flush(where)


def flush(where: str | None = None) -> None:
    where = where or directory()
    if not where or where != _directory:
        return
    for stage, count in list(_counts.items()):
        # One file per process: the counts are the process's, whichever thread ticked them.
        path = os.path.join(where, f"{stage}.{os.getpid()}")
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write(str(count))
            os.replace(tmp, path)
        except OSError:
            pass  # progress is best effort: never fail a record over it


def _total(directory: str, stage: str) -> int:
    total = 0
    for name in os.listdir(directory):
        if name.startswith(stage + ".") and not name.endswith(".tmp"):
            try:
                with open(os.path.join(directory, name)) as f:
                    total += int(f.read() or 0)
            except (OSError, ValueError):
                pass
    return total


class Progress:
    """Context manager: shows `stage` progress on stderr while the body (the pipeline run) works."""

    def __init__(self, stage: str, total: int | None = None, unit: str = "items", enabled: bool = True):
        self.stage, self.total, self.unit, self.enabled = stage, total, unit, enabled
        self._dir = None
        self._stop = threading.Event()

    def __enter__(self):
        if not self.enabled or os.environ.get(ENV):
            return self
        self._dir = tempfile.mkdtemp(prefix="webtext-progress-")
        os.environ[ENV] = self._dir
        self._thread = threading.Thread(target=self._show, daemon=True)
        self._thread.start()
        return self

    def _show(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        columns = [TextColumn(f"[bold]{self.stage}[/]"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn()]
        start = time.monotonic()
        with Bar(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(self.stage, total=self.total, rate="")
            while not self._stop.wait(0.5):
                done = _total(self._dir, self.stage)
                rate = done / max(1e-9, time.monotonic() - start)
                bar.update(task, completed=done, rate=f"{rate:,.0f} {self.unit}/s")
            done = _total(self._dir, self.stage)
            bar.update(task, completed=done, rate=f"{done / max(1e-9, time.monotonic() - start):,.0f} {self.unit}/s")

    def __exit__(self, *exc):
        if self._dir is None:
            return
        flush(self._dir)
        self._stop.set()
        self._thread.join()
        del os.environ[ENV]
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)
