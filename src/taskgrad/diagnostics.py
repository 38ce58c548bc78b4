"""Watching a run: a progress bar and a profiler, built on :class:`~taskgrad.Callback`.

Both work as dask users know them, on every local scheduler (``sync``,
``threads``, ``processes``)::

    with tg.ProgressBar():
        y.compute()

    with tg.Profiler() as prof:
        tg.compute(loss, *grads)
    prof.plot()                     # Gantt chart: one row per worker

Your own tools subclass ``Callback`` and override ``start(graph)``,
``pretask(key)``, ``posttask(info)`` and ``finish(graph, errored)``; the
scheduler calls them one at a time, so they need no locks of their own (see
``taskgrad.callbacks``).  Leaves (``Literal`` tasks) hold values and never run,
so neither tool counts them.
"""

from __future__ import annotations

import sys
import warnings
from typing import NamedTuple

from .callbacks import Callback
from .graph import Literal
from .visualize import task_label

__all__ = ["ProgressBar", "Profiler", "TaskRecord"]

ROLE_COLORS = {"forward": "#2e75b6", "backward": "#e07b39"}
OTHER_COLOR = "#888888"


def _runnable(graph):
    return sum(1 for task in graph.values() if type(task) is not Literal)


def _tqdm_class(file):
    """tqdm's notebook widget in Jupyter (when ipywidgets is there), text elsewhere."""
    if file is not None:
        from tqdm.std import tqdm
        return tqdm
    with warnings.catch_warnings():  # no ipywidgets: tqdm.auto falls back to text, say nothing
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm


class ProgressBar(Callback):
    """A tqdm progress bar over the tasks of each ``compute``.

    ``out``: the stream to write to (default: ``sys.stderr``, or a widget in
    Jupyter); ``minimum``: seconds a run must last before the bar appears;
    ``desc`` and other keywords go to ``tqdm``.  Runs in several threads at
    once get a bar each.
    """

    def __init__(self, minimum=0.0, out=None, desc="compute", **tqdm_kwargs):
        super().__init__()
        self.minimum = minimum
        self.out = out
        self.desc = desc
        self.tqdm_kwargs = tqdm_kwargs
        self._bars = []  # (graph, bar) of each run in progress

    def start(self, graph):
        tqdm = _tqdm_class(self.out)
        kwargs = {"total": _runnable(graph), "desc": self.desc, "unit": "task",
                  "delay": self.minimum, "leave": True, **self.tqdm_kwargs}
        if self.out is not None:
            kwargs["file"] = self.out
        elif tqdm.__module__ == "tqdm.std":
            kwargs["file"] = sys.stderr
        self._bars.append((graph, tqdm(**kwargs)))

    def posttask(self, info):
        _run_of(self._bars, info.key)[1].update(1)

    def finish(self, graph, errored):
        entry = next(e for e in self._bars if e[0] is graph)
        self._bars.remove(entry)
        if errored:
            entry[1].set_postfix_str("failed")
        entry[1].close()


def _run_of(runs, key):
    """The entry of ``runs`` (``(graph, state)`` pairs, in progress) whose graph has ``key``."""
    for run in reversed(runs):
        if key in run[0]:
            return run
    raise KeyError(key)


class TaskRecord(NamedTuple):
    """One task's run: what it was, when (``time.time()`` seconds) and where."""

    key: str
    name: str
    role: str
    start: float
    end: float
    worker: int


class Profiler(Callback):
    """Record start, end and worker of every task run, and draw them as a Gantt chart.

    Records accumulate over every ``compute`` while the profiler is active
    (so a training loop can be profiled as a whole); entering ``with``
    starts afresh, and :meth:`clear` does so by hand.
    """

    def __init__(self):
        super().__init__()
        self.results = []
        self._runs = []  # (graph, None) of each run in progress

    def __enter__(self):
        self.clear()
        return super().__enter__()

    def clear(self):
        self.results = []

    def start(self, graph):
        self._runs.append((graph, None))

    def posttask(self, info):
        task = _run_of(self._runs, info.key)[0][info.key]
        self.results.append(TaskRecord(info.key, task_label(task), task.role,
                                       info.start, info.end, info.worker))

    def finish(self, graph, errored):
        self._runs.remove(next(e for e in self._runs if e[0] is graph))

    def timings(self):
        """Seconds each task took, by key."""
        return {r.key: r.end - r.start for r in self.results}

    def summary(self):
        """Per function name and role: ``(count, total seconds)``, slowest first."""
        totals = {}
        for r in self.results:
            count, seconds = totals.get((r.name, r.role), (0, 0.0))
            totals[r.name, r.role] = (count + 1, seconds + r.end - r.start)
        return dict(sorted(totals.items(), key=lambda item: -item[1][1]))

    def plot(self, ax=None, filename=None, title="task timeline"):
        """Draw the run as a Gantt chart: one row per worker, forward and backward apart.

        Returns the matplotlib ``Axes``; ``filename`` also saves the figure.
        """
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch

        if not self.results:
            raise ValueError("the profiler has no records: run a compute while it is "
                             "active (with Profiler(): ... or compute(callbacks=[...]))")
        if ax is None:
            _, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len({r.worker for r in self.results})))
        t0 = min(r.start for r in self.results)
        rows = {}
        for r in sorted(self.results, key=lambda r: r.start):
            rows.setdefault(r.worker, len(rows))
        roles = sorted({r.role for r in self.results})
        for role in roles:
            color = ROLE_COLORS.get(role, OTHER_COLOR)
            for worker, row in rows.items():
                bars = [(r.start - t0, max(r.end - r.start, 1e-9)) for r in self.results
                        if r.worker == worker and r.role == role]
                if bars:
                    ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=color,
                                   edgecolors="black", linewidth=0.3)
        ax.set_yticks(range(len(rows)), [str(w) for w in rows])
        ax.set_ylabel("worker")
        ax.set_xlabel("seconds since the first task started")
        ax.set_title(title)
        ax.legend(handles=[Patch(color=ROLE_COLORS.get(role, OTHER_COLOR), label=role)
                           for role in roles], loc="upper left", bbox_to_anchor=(1.0, 1.0))
        if filename is not None:
            ax.figure.savefig(filename, bbox_inches="tight")
        return ax
