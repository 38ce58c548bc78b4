"""The thread executor: a worker runs its batch right here, in its own thread.

Threads run NumPy and other GIL-releasing code in parallel.  Workers share
the run's ``results`` dict: they read their inputs from it and write their
outputs into it (dict operations are atomic under the GIL), so a batch
returns no values, only its timings.
"""

from __future__ import annotations

from .local import default_num_workers, run_unit


class ThreadExecutor:
    max_batch = 256

    def __init__(self, num_workers=None):
        self.num_workers = num_workers or default_num_workers()

    def start(self, run):
        self.shared = run
        self.results = run.results
        self.units = run.plan.units

    def run(self, worker, batch, timed):
        """Run the units numbered ``batch`` in this thread; return (outputs, timings, worker).

        Stops between units once the run has failed: no new task starts after a failure.
        """
        timings = [] if timed else None
        shared, results, units = self.shared, self.results, self.units
        for u in batch:
            if shared.failure is not None:
                break
            run_unit(units[u], results, timings)
        return None, timings, worker

    def stop(self, errored):
        """Nothing to shut down: the helper threads are kept for the next run (a task still
        running after a failure finishes in the background; a thread cannot be stopped)."""
