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
worker that started it and its values stay in that thread.  A worker with
nothing of its own takes a unit that was ready from the start, or steals one,
but only where that pays.  Handing a value to another thread costs a wake-up
(``HANDOFF``), so a unit runs on another worker than its inputs' only if it
then ends sooner than where it is, and a helper thread starts ``HANDOFF``
after the calling thread.  And a unit shorter than a few hand-offs
(``MOVABLE``) stays where it is: most of such a unit is Python, which holds
the GIL, so it would not run in parallel anyway.  Small graphs thus stay on
the calling thread.

Every unit starts, in the simulation, after the units it reads have ended;
running each worker's list in order of those start times can therefore never
deadlock, whatever the real durations: a worker waits only for units that
started earlier in the simulation.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

__all__ = ["HANDOFF", "MOVABLE", "partition"]

# seconds for a value to reach a thread that waits for it (measured here: a wake-up of a
# blocked thread 27 us, a ping-pong between two threads 86 us a round trip)
HANDOFF = 5e-5
# the least cost, in hand-offs, of a unit run by a helper on another worker's values (or
# on none): a matrix product of a data-parallel shard is (0.2-1.4 ms), a small op is not
MOVABLE = 4


def partition(plan, workers, cost, handoff=HANDOFF):
    """``(owner, order)``: ``owner[u]`` is the worker of unit ``u`` of ``plan``, and
    ``order[w]`` the units of worker ``w`` in the order it runs them.

    ``cost[u]`` is the time unit ``u`` takes, in seconds (as ``handoff``).
    Deterministic: the same plan and costs give the same answer.
    """
    units = plan.units
    producer = {unit[-1].key: u for u, unit in enumerate(units)}
    sources = [[producer[k] for k in keys if k in producer] for keys in plan.unit_inputs]
    sim = _Simulation(plan, workers, cost)
    owner, finish = sim.owner, [0.0] * len(units)
    # a worker becomes free: (time, worker, the unit it finished or None)
    events = [(0.0 if w == 0 else handoff, w, None) for w in range(workers)]
    heapify(events)
    idle = []
    while events:
        now = events[0][0]
        free, idle = idle, []
        while events and events[0][0] == now:
            _, w, u = heappop(events)
            free.append(w)
            if u is not None:
                sim.finished(u, w)
        # the workers with units of their own choose first: a thief takes what they leave
        free.sort(key=lambda w: (not sim.own[w], w))
        for w in free:
            u = sim.take(w, now, handoff)
            if u is None:
                idle.append(w)
                continue
            start = now
            for p in sources[u]:
                if owner[p] != w and finish[p] + handoff > start:
                    start = finish[p] + handoff  # it waits for a value from another thread
            finish[u] = sim.busy_until[w] = start + cost[u]
            heappush(events, (finish[u], w, u))
    return owner, sim.order


class _Simulation:
    """The dynamic loop's state, simulated: who owns which ready units, until when each
    worker is busy, what each worker still has queued (in time)."""

    def __init__(self, plan, workers, cost):
        self.cost = cost
        self.consumers = plan.unit_consumers
        self.waiting = plan.waiting.copy()
        self.own = [[] for _ in range(workers)]  # heaps of the units each worker made ready
        self.backlog = [0.0] * workers  # the cost of those units
        self.unowned = list(plan.ready)  # ready from the start: nobody's yet
        heapify(self.unowned)
        self.busy_until = [0.0] * workers
        self.owner = [0] * len(plan.units)
        self.order = [[] for _ in range(workers)]

    def finished(self, u, w):
        """Unit ``u`` ended on worker ``w``: the consumers it made ready are ``w``'s."""
        waiting, own, cost = self.waiting, self.own[w], self.cost
        for c in self.consumers[u]:
            left = waiting[c] - 1
            waiting[c] = left
            if not left:
                heappush(own, c)
                self.backlog[w] += cost[c]

    def take(self, w, now, handoff):
        """The unit worker ``w``, free at ``now``, runs next (None: none for it now): its
        own first (the lowest-numbered: the oldest branch), then one ready from the start,
        then one stolen from the worker with the most work left, if it ends sooner here;
        a helper takes a unit that is not its own only if it is ``MOVABLE``."""
        movable = MOVABLE * handoff
        if self.own[w]:
            u = self._pop(w)
        elif self.unowned and (w == 0 or self.cost[self.unowned[0]] >= movable):
            u = heappop(self.unowned)  # (the calling thread takes any: it runs the rest)
        else:
            busy = [v for v in range(len(self.own)) if self.own[v]]
            if not busy:
                return None
            v = max(busy, key=lambda v: self.busy_until[v] + self.backlog[v])
            u = self.own[v][0]
            if self.cost[u] < movable or \
                    now + handoff + self.cost[u] >= self.busy_until[v] + self.backlog[v]:
                return None
            self._pop(v)
        self.owner[u] = w
        self.order[w].append(u)
        return u

    def _pop(self, v):
        u = heappop(self.own[v])
        self.backlog[v] -= self.cost[u]
        return u
