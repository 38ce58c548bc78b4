"""The thread-pool executor: worker threads share the loop's results dict.

Threads run NumPy and other GIL-releasing code in parallel.  Workers read
their inputs straight from the shared ``results`` and write their outputs
into it (dict operations are atomic under the GIL), so a batch returns only
its id and timings.  Threads are started lazily: a graph that is one chain
runs entirely in the calling thread and never pays for a thread.
"""

from __future__ import annotations

import os
import threading
from queue import SimpleQueue

from .local import TaskFailed, add_task_note, run_unit


class ThreadExecutor:
    inline = True  # a lone ready unit runs in the calling thread
    max_batch = 256

    def __init__(self, num_workers=None):
        self.num_workers = num_workers or os.cpu_count() or 1
        self.max_in_flight = 2 * self.num_workers
        self.threads = []

    def start(self, results):
        self.results = results
        self.todo = SimpleQueue()
        self.done = SimpleQueue()
        self.cancelled = False

    def _ensure_threads(self):
        if not self.threads:
            for worker in range(self.num_workers):
                t = threading.Thread(target=self._work, args=(worker,), daemon=True,
                                     name=f"taskgrad-worker-{worker}")
                t.start()
                self.threads.append(t)

    def submit(self, batch_id, units, inputs, timed):
        self._ensure_threads()
        self.todo.put((batch_id, units, timed))

    def _work(self, worker):
        results, todo, done = self.results, self.todo, self.done
        while True:
            item = todo.get()
            if item is None:
                return
            batch_id, units, timed = item
            timings = [] if timed else None
            failure = None
            try:
                for unit in units:
                    if self.cancelled:
                        break
                    run_unit(unit, results, timings)
            except TaskFailed as failed:
                failure = failed
            done.put((batch_id, timings, worker, failure))

    def wait(self):
        batch_id, timings, worker, failure = self.done.get()
        if failure is not None:
            raise add_task_note(failure.exc, failure.key)
        return batch_id, None, timings, worker

    def stop(self, errored):
        """Tell the workers to stop; on error they stop between tasks and we do not wait."""
        self.cancelled = errored
        for _ in self.threads:
            self.todo.put(None)
        if not errored:
            for t in self.threads:
                t.join()
        self.threads = []
