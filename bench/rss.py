"""Resident memory of a process tree, for the benchmarks (the direct runner's workers and the extractor
children are processes of their own, so one process's RSS would undercount)."""

from __future__ import annotations

import collections
import os
import threading


def tree_rss(pid: int | None = None) -> int:
    """Summed RSS in bytes of `pid` (default: this process) and all its descendants, from /proc."""
    children, rss = collections.defaultdict(list), {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children[int(fields[1])].append(int(entry))
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [os.getpid() if pid is None else pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total


class PeakRss:
    """Peak of `tree_rss()` of this process, sampled every `interval` s while the block runs; `base` is the
    value when the block started."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self.base, self._stop = interval, 0, 0, threading.Event()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, tree_rss())

    def __enter__(self):
        self.base = self.peak = tree_rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss())
