"""The thread executor: a worker runs its batch right here, in its own thread.

Threads run NumPy and other GIL-releasing code in parallel.  Workers share
the run's ``results`` dict: they read their inputs from it and write their
outputs into it (dict operations are atomic under the GIL), so a batch
returns no values, only its timings.
"""

from __future__ import annotations

from time import perf_counter

from .local import default_num_workers, run_unit


class ThreadExecutor:
    """``costs``, when a list, receives each unit's wall time, by unit number: what
    ``static_threads`` plans a compiled graph with.  (Wall, not CPU time: a unit that
    waits, for a file, a socket, a nested run, holds its thread as long as one that
    computes; the time a unit waits for the GIL counts too, which only makes it look
    more worth a thread of its own than it is.)"""

    max_batch = 256

    def __init__(self, num_workers=None, costs=None):
        self.num_workers = num_workers or default_num_workers()
        self.costs = costs

    def start(self, run):
        self.shared = run
        self.results = run.results
        self.units = run.plan.units

    def run(self, worker, batch, timed):
        """Run the units numbered ``batch`` in this thread; return (outputs, timings, worker).

        Stops between units once the run has failed: no new task starts after a failure.
        """
        timings = [] if timed else None
        shared, results, units, costs = self.shared, self.results, self.units, self.costs
        for u in batch:
            if shared.failure is not None:
                break
            if costs is None:
                run_unit(units[u], results, timings)
            else:
                start = perf_counter()
                run_unit(units[u], results, timings)
                costs[u] = perf_counter() - start
        return None, timings, worker

    def stop(self, errored):
        """Nothing to shut down: the helper threads are kept for the next run (a task still
        running after a failure finishes in the background; a thread cannot be stopped)."""
