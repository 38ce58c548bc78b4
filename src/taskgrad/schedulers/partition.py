"""Decide once which worker runs each unit of a plan, and in what order.

A graph compiled for ``"threads"`` runs the same units with the same costs at
every call, so the choices the dynamic loop makes at run time (``local.py``:
take a ready unit, finish it, make its consumers ready) can be made once,
ahead of time, by simulating that loop with the units' measured costs.  Each
worker then runs a fixed list of units as straight-line code
(``worker_programs.py``), with no shared state to update per unit.

The simulation is list scheduling with *continuation affinity*, the rule of
work-stealing schedulers: a unit made ready by a worker's unit goes to that
worker's own queue, so a branch (a data-parallel shard, say) stays on the
worker that started it and its values never cross between threads; a worker
with nothing of its own takes a unit nobody made ready yet, or steals one.
Every unit starts, in the simulation, after the units it reads have ended;
running each worker's list in order of those start times can therefore never
deadlock, whatever the real durations: a worker waits only for units that
started earlier in the simulation.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

__all__ = ["partition"]


def partition(plan, workers, cost):
    """``(owner, order)``: ``owner[u]`` is the worker of unit ``u`` of ``plan``, and
    ``order[w]`` the units of worker ``w`` in the order it runs them.

    ``cost[u]`` is the time unit ``u`` takes (any unit of time, the same for all).
    Deterministic: the same plan and costs give the same answer.
    """
    consumers = plan.unit_consumers
    waiting = plan.waiting.copy()
    own = [[] for _ in range(workers)]  # per worker, a heap of the units it made ready
    unowned = list(plan.ready)  # ready from the start: nobody's yet
    heapify(unowned)
    owner = [0] * len(plan.units)
    order = [[] for _ in range(workers)]
    running = []  # heap of (end time, worker, unit)
    idle = list(range(workers))
    now = 0.0
    while True:
        # the idle workers with units of their own choose first, so that a thief takes
        # only what its owner leaves
        idle.sort(key=lambda w: (not own[w], w))
        waiting_workers = []
        for w in idle:
            u = _next_unit(w, own, unowned)
            if u is None:
                waiting_workers.append(w)
                continue
            owner[u] = w
            order[w].append(u)
            heappush(running, (now + cost[u], w, u))
        idle = waiting_workers
        if not running:
            break
        now = running[0][0]
        while running and running[0][0] == now:
            _, w, u = heappop(running)
            idle.append(w)
            for c in consumers[u]:
                left = waiting[c] - 1
                waiting[c] = left
                if not left:
                    heappush(own[w], c)
    return owner, order


def _next_unit(worker, own, unowned):
    """The unit ``worker`` takes: its own first, then one nobody owns, then one stolen
    from the worker with the most ready units (the lowest-numbered: the oldest branch)."""
    if own[worker]:
        return heappop(own[worker])
    if unowned:
        return heappop(unowned)
    victim = max(range(len(own)), key=lambda v: len(own[v]))
    if own[victim]:
        return heappop(own[victim])
    return None
