"""Builders that hand a task its fill plan must hand the plan the task would compute."""

import numpy as np

import taskgrad as tg
import taskgrad.numpy as tnp
from taskgrad.delayed import collect_graph


def _check_plans(*outputs):
    graph = collect_graph(outputs)
    for task in graph.values():
        if task.func is not None:
            assert task._refs == task._fill_plan(), task


@tg.delayed
def combine(a, b=0, *, scale=1):
    return (np.asarray(a) + b) * scale


def test_forward_builders_pass_the_computed_plan():
    x = tg.delayed(np.arange(3.0), name="x")
    y = tg.delayed(2.0, name="y")
    _check_plans(
        x + y, x * x, tnp.sum(x, axis=0), tnp.concatenate([x, x]),
        combine([x, y]), combine(x, b=y), combine(x, y, scale=3), combine((1, 2), x),
        combine({"k": 1}, 2), tnp.where(x > 1, x, y),
    )


def test_backward_builders_pass_the_computed_plan():
    x = tg.delayed(np.arange(1.0, 4.0), name="x")
    w = tg.delayed(np.ones(3), name="w")
    loss = tnp.sum(tnp.tanh(x * w + 1.0) ** 2) + tnp.mean(tnp.concatenate([x, w]))
    grads = tg.grad(loss, [x, w])
    _check_plans(loss, *grads)
    _check_plans(*tg.grad(tnp.sum(grads[0] * grads[0]), [x]))
