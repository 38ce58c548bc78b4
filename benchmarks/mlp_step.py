"""One SGD training step of an MLP 784-256-256-10 (ReLU, softmax cross-entropy,
batch 256), float64 and float32, in one process with BLAS threads = 1.

Two sections per dtype.  The main table compares, one thread each:
hand-written NumPy forward+backward (the baseline); taskgrad with fine-grained
ops (``tnp``, with ``taskgrad.nn``'s fused ReLU and log-softmax, as PyTorch's row
uses ``torch.relu`` and ``log_softmax``; "composed" builds them from six ``tnp`` ops
instead) and with coarse plain-NumPy ``@tg.delayed`` layers, each rebuilt every
step (graph, ``tg.grad``, planning, then computed) and compiled (the same graph
built once with ``tg.placeholder`` for the batch and the parameters and
``tg.compile``-d, as a training loop would, so that building, differentiating
and planning are paid once and a step only feeds the values and runs), all on
``"sync"``; HIPS autograd (with its fused ``logsumexp``); PyTorch eager (CPU, one
thread).

The data-parallel section splits the batch into two halves: hand-written NumPy
on the halves one after the other and on two threads (the ceiling: what the
same NumPy work gets from a second thread on this machine in this run), and
taskgrad graphs with two independent shard branches whose gradients are summed,
each on ``"sync"`` and ``"threads"``: ``tnp`` rebuilt and compiled, layers
compiled, and the compiled ``tnp`` step with the SGD update in the graph, so
that the updates of the parameters run in parallel too (every other row updates
in NumPy after the gradients, one thread).  It runs longer blocks of
back-to-back steps, as a training loop does, and reports the threads-vs-sync
speed-ups both as a ratio of medians and as the median of ratios paired within
a round.  A probe, just before and just after it, measures how much of a second
core is actually free.

Every implementation's gradients (or new parameters) are checked against the
baseline first.  Times
are medians over interleaved, shuffled rounds (the machine is shared and noisy).

Run: ``PYTHONPATH=src python benchmarks/mlp_step.py [--rounds N] [--parallel-rounds N]``
"""

import _common  # noqa: F401  (pins BLAS to one thread before NumPy loads)

import argparse  # noqa: E402
import statistics  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import taskgrad as tg  # noqa: E402
import taskgrad.nn as tnn  # noqa: E402
import taskgrad.numpy as tnp  # noqa: E402

SIZES = (784, 256, 256, 10)
BATCH = 256
LR = 0.1
NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")
PARALLEL_BLOCK = 30


def make_problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, SIZES[0])).astype(dtype)
    onehot = np.eye(SIZES[-1], dtype=dtype)[rng.integers(0, SIZES[-1], size=BATCH)]
    params = []
    for n_in, n_out in zip(SIZES[:-1], SIZES[1:]):
        params.append(rng.normal(scale=np.sqrt(2 / n_in), size=(n_in, n_out)).astype(dtype))
        params.append(np.zeros(n_out, dtype))
    return x, onehot, params


# ---------------------------------------------------------------- hand-written NumPy

def numpy_grads(params, x, onehot):
    W1, b1, W2, b2, W3, b3 = params
    a1 = x @ W1 + b1
    h1 = np.maximum(a1, 0)
    a2 = h1 @ W2 + b2
    h2 = np.maximum(a2, 0)
    z = h2 @ W3 + b3
    z = z - np.max(z, axis=1, keepdims=True)
    e = np.exp(z)
    s = np.sum(e, axis=1, keepdims=True)
    loss = -np.mean(np.sum(onehot * (z - np.log(s)), axis=1))
    dz = (e / s - onehot) / x.shape[0]
    dW3, db3 = h2.T @ dz, dz.sum(0)
    da2 = (dz @ W3.T) * (a2 > 0)
    dW2, db2 = h1.T @ da2, da2.sum(0)
    da1 = (da2 @ W2.T) * (a1 > 0)
    dW1, db1 = x.T @ da1, da1.sum(0)
    return loss, [dW1, db1, dW2, db2, dW3, db3]


def sgd(grads_fn):
    """A training step from a gradient function: the SGD update in NumPy, the same for all."""
    def step(params, x, onehot):
        loss, grads = grads_fn(params, x, onehot)
        return loss, [p - LR * g for p, g in zip(params, grads)]
    return step


numpy_step = sgd(numpy_grads)


_halves_pool = ThreadPoolExecutor(1)


def halves_grads(grads_fn, params, x, onehot, threads):
    """``grads_fn`` on two half batches, one after the other or on two threads, averaged.

    With hand-written NumPy this is the ceiling for any 2-shard data-parallel speed-up on
    this machine, measured in the same run.  On two threads, the second half runs on a pool
    thread while the calling thread runs the first (measured here: faster than handing both
    to a pool, one wake-up less per step)."""
    half = len(x) // 2
    first, second = (x[:half], onehot[:half]), (x[half:], onehot[half:])
    if threads:
        pending = _halves_pool.submit(grads_fn, params, *second)
        loss_a, grads_a = grads_fn(params, *first)
        loss_b, grads_b = pending.result()
    else:
        (loss_a, grads_a), (loss_b, grads_b) = (grads_fn(params, *first),
                                                grads_fn(params, *second))
    return (loss_a + loss_b) / 2, [(a + b) / 2 for a, b in zip(grads_a, grads_b)]


# ---------------------------------------------------------------- taskgrad

def mlp_loss(m, relu, log_softmax, x, onehot, W1, b1, W2, b2, W3, b3):
    """The loss written once for any NumPy-like module ``m`` (``tnp``, ``autograd.numpy``),
    with that library's ReLU and log-softmax."""
    h1 = relu(x @ W1 + b1)
    h2 = relu(h1 @ W2 + b2)
    logp = log_softmax(h2 @ W3 + b3)
    return -m.mean(m.sum(onehot * logp, axis=1))


def composed_log_softmax(m):
    """Log-softmax over rows made of ``m``'s own ops (six of them)."""
    def log_softmax(z):
        z = z - m.max(z, axis=1, keepdims=True)
        return z - m.log(m.sum(m.exp(z), axis=1, keepdims=True))
    return log_softmax


def tnp_loss(x, onehot, *params):
    """Fine-grained: one task per op, with taskgrad.nn's fused ReLU and log-softmax."""
    return mlp_loss(tnp, tnn.relu, partial(tnn.log_softmax, axis=1), x, onehot, *params)


def tnp_composed_loss(x, onehot, *params):
    """Fine-grained, ReLU as ``maximum`` and log-softmax composed of six ``tnp`` ops."""
    return mlp_loss(tnp, lambda a: tnp.maximum(a, 0.0), composed_log_softmax(tnp), x, onehot,
                    *params)


@tg.delayed
def dense_relu(x, W, b):
    return np.maximum(x @ W + b, 0.0)


@tg.delayed
def softmax_cross_entropy(x, W, b, onehot):
    logp = tnn.log_softmax(x @ W + b, axis=1)
    return -np.mean(np.sum(onehot * logp, axis=1))


def layered_loss(x, onehot, W1, b1, W2, b2, W3, b3):
    """Coarse: plain-NumPy layers, traced."""
    return softmax_cross_entropy(dense_relu(dense_relu(x, W1, b1), W2, b2), W3, b3, onehot)


def loss_and_grads(loss_fn, x, onehot, params, batch, shards=1):
    """The loss on the batch and its gradients, as lazy values.

    With ``shards`` > 1 (data parallel), ``loss_fn`` runs on that many
    consecutive slices of the batch of ``batch`` rows, each weighted by its share
    of it, so that the sum is the loss on the whole batch; each shard's forward
    and backward are independent branches, and their gradients are summed.
    """
    if shards == 1:
        losses = [loss_fn(x, onehot, *params)]
    else:
        bounds = [batch * i // shards for i in range(shards + 1)]
        losses = [loss_fn(x[a:b], onehot[a:b], *params) * ((b - a) / batch)
                  for a, b in zip(bounds, bounds[1:])]
    grads = [tg.grad(y, params) for y in losses]
    return [sum(losses[1:], losses[0]), *(sum(gs[1:], gs[0]) for gs in zip(*grads))]


def taskgrad_grads(loss_fn, params, x, onehot, scheduler="sync", shards=1):
    """The graph rebuilt (built, differentiated, planned) and computed for this step."""
    leaves = [tg.delayed(p) for p in params]
    loss, *grads = tg.compute(*loss_and_grads(loss_fn, x, onehot, leaves, len(x), shards),
                              scheduler=scheduler)
    return loss, grads


def compiled_grads(loss_fn, dtype, scheduler="sync", shards=1, update=False):
    """The same graph compiled once, with placeholders for the batch and the parameters, as a
    training loop would: a step only feeds the values and runs it.  With ``shards`` > 1 the
    shards' weights are fixed for batches of ``BATCH`` rows.  With ``update`` the SGD update
    is in the graph too (one task per parameter, in parallel on "threads"), and the function
    returns the loss and the new parameters: a whole training step."""
    x = tg.placeholder("x", shape=(None, SIZES[0]), dtype=dtype)
    onehot = tg.placeholder("onehot", shape=(None, SIZES[-1]), dtype=dtype)
    params = [tg.placeholder(name) for name in NAMES]
    loss, *grads = loss_and_grads(loss_fn, x, onehot, params, BATCH, shards)
    if update:
        grads = [p - LR * g for p, g in zip(params, grads)]
    run = tg.compile([loss, *grads], scheduler=scheduler)

    def call(params, xv, ov):
        loss, *rest = run(x=xv, onehot=ov, **dict(zip(NAMES, params)))
        return loss, rest

    return call


# ---------------------------------------------------------------- HIPS autograd

def autograd_parts():
    import autograd
    import autograd.numpy as anp
    from autograd.scipy.special import logsumexp

    def loss(params, x, onehot):  # (logsumexp: autograd's fused primitive, with its own rule)
        return mlp_loss(anp, lambda a: anp.maximum(a, 0.0),
                        lambda z: z - logsumexp(z, axis=1, keepdims=True), x, onehot, *params)

    value_and_grad = autograd.value_and_grad(loss)

    def grads(params, x, onehot):
        value, g = value_and_grad(params, x, onehot)
        return value, list(g)

    def step(params, x, onehot):
        value, g = value_and_grad(params, x, onehot)
        return value, [p - LR * gi for p, gi in zip(params, g)]

    return grads, step


# ---------------------------------------------------------------- PyTorch eager

def torch_parts():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)

    def run(params, x, onehot, update):
        ps = [torch.from_numpy(p).requires_grad_() for p in params]
        xt, yt = torch.from_numpy(x), torch.from_numpy(onehot)
        W1, b1, W2, b2, W3, b3 = ps
        h1 = torch.relu(xt @ W1 + b1)
        h2 = torch.relu(h1 @ W2 + b2)
        z = h2 @ W3 + b3
        loss = -(yt * torch.log_softmax(z, dim=1)).sum(1).mean()
        loss.backward()
        if update:
            with torch.no_grad():
                return loss.item(), [(p - LR * p.grad).numpy() for p in ps]
        return loss.item(), [p.grad.numpy() for p in ps]

    return (lambda p, x, o: run(p, x, o, False)), (lambda p, x, o: run(p, x, o, True))


# ---------------------------------------------------------------- running

def check_same_gradients(impls, params, x, onehot, dtype, reference=numpy_grads):
    """Each of ``impls`` gives the loss and arrays (gradients, or with ``reference=numpy_step``
    the new parameters) of the hand-written reference."""
    ref_loss, ref = reference(params, x, onehot)
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    for name, grads_fn in impls.items():
        loss, grads = grads_fn(params, x, onehot)
        assert np.allclose(loss, ref_loss, rtol=rtol), (name, loss, ref_loss)
        for i, (g, r) in enumerate(zip(grads, ref)):
            g = np.asarray(g)
            assert g.dtype == r.dtype, (name, i, g.dtype)
            scale = np.max(np.abs(r))
            assert np.allclose(g, r, rtol=rtol, atol=rtol * scale), \
                (name, i, float(np.max(np.abs(g - r))), scale)


def main_table_grads(dtype):
    """The taskgrad rows of the main table, as gradient functions."""
    return {
        "taskgrad tnp (sync)": partial(taskgrad_grads, tnp_loss),
        "taskgrad tnp composed (sync)": partial(taskgrad_grads, tnp_composed_loss),
        "taskgrad layers (sync)": partial(taskgrad_grads, layered_loss),
        "taskgrad tnp compiled (sync)": compiled_grads(tnp_loss, dtype),
        "taskgrad layers compiled (sync)": compiled_grads(layered_loss, dtype),
    }


# the 2-shard rows: (label, loss, compiled?)
SHARDED = [("tnp 2 shards rebuilt", tnp_loss, False),
           ("tnp 2 shards compiled", tnp_loss, True),
           ("layers 2 shards compiled", layered_loss, True)]


def parallel_grads(dtype):
    """The rows of the data-parallel section, as gradient functions."""
    impls = {
        "NumPy 2 halves (one thread)": partial(halves_grads, numpy_grads, threads=False),
        "NumPy 2 halves (2 threads)": partial(halves_grads, numpy_grads, threads=True),
    }
    for label, loss_fn, compiled in SHARDED:
        for scheduler in ("sync", "threads"):
            impls[f"taskgrad {label} ({scheduler})"] = (
                compiled_grads(loss_fn, dtype, scheduler, shards=2) if compiled
                else partial(taskgrad_grads, loss_fn, scheduler=scheduler, shards=2))
    return impls


# (label, the row on one thread or "sync", the row on two threads or "threads")
SPEED_UPS = [(f"taskgrad {label}, threads vs sync", f"taskgrad {label} (sync)",
              f"taskgrad {label} (threads)") for label, _, _ in SHARDED] + [
    ("the same with the SGD update in the graph, threads vs sync",
     "taskgrad tnp 2 shards compiled, update in graph (sync)",
     "taskgrad tnp 2 shards compiled, update in graph (threads)"),
    ("ceiling: hand-written NumPy halves, 2 threads vs one",
     "NumPy 2 halves (one thread)", "NumPy 2 halves (2 threads)"),
]


def parallel_steps(dtype, par_grads):
    """The steps of the data-parallel section: each gradient function with the update in
    NumPy, and the compiled 2-shard graph with the update in the graph."""
    steps = {name: sgd(fn) for name, fn in par_grads.items()}
    for scheduler in ("sync", "threads"):
        steps[f"taskgrad tnp 2 shards compiled, update in graph ({scheduler})"] = \
            compiled_grads(tnp_loss, dtype, scheduler, shards=2, update=True)
    return steps


def print_main_table(steps, inputs, dtype, rounds):
    """Each row's wall and CPU medians, against hand-written NumPy and PyTorch."""
    wall, cpu = _common.interleaved_medians(steps, inputs, rounds, 5)
    print(f"\n{np.dtype(dtype).name}: medians of {rounds} rounds of 5 steps each, "
          "shuffled (gradients checked equal first); cpu = this process's CPU time")
    print(f"{'implementation':32s} {'wall ms':>8s} {'x NumPy':>8s} {'x torch':>8s} "
          f"{'cpu ms':>8s} {'x NumPy':>8s} {'x torch':>8s}")
    for name in wall:
        cells = []
        for medians in (wall, cpu):
            t, base = medians[name], medians["hand-written NumPy"]
            torch_time = medians.get("PyTorch eager")
            vs_torch = f"{t / torch_time:8.2f}" if torch_time else f"{'-':>8s}"
            cells.append(f"{t * 1e3:8.2f} {t / base:8.2f} {vs_torch}")
        print(f"{name:32s} {' '.join(cells)}")


def print_parallel_section(steps, inputs, dtype, rounds):
    """The data-parallel rows, and the speed-ups of two threads over one both as a ratio of
    medians and as the median of the ratios within each round (both steps of a pair ran
    under the same load, so drifts in the load between rounds cancel)."""
    wall, cpu = _common.interleaved_times(steps, inputs, rounds, PARALLEL_BLOCK)
    wall_med, cpu_med = _common.medians(wall), _common.medians(cpu)
    base = wall_med["NumPy 2 halves (one thread)"]
    rows = [[name, f"{wall_med[name] * 1e3:.2f}", f"{cpu_med[name] * 1e3:.2f}",
             f"{wall_med[name] / base:.2f}"] for name in steps]
    _common.print_table(
        f"{np.dtype(dtype).name}, data parallel on 2 half batches: medians of {rounds} "
        f"shuffled rounds of {PARALLEL_BLOCK} back-to-back steps",
        ["implementation", "wall ms", "cpu ms", "x NumPy 2 halves (one thread)"], rows)
    width = max(len(label) for label, _, _ in SPEED_UPS) + 1
    for label, one, two in SPEED_UPS:
        paired = statistics.median(a / b for a, b in zip(wall[one], wall[two]))
        print(f"{label + ':':{width}s} speed-up {wall_med[one] / wall_med[two]:.2f}x (ratio of "
              f"wall medians), {paired:.2f}x (median of per-round wall ratios)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="rounds of the main table")
    parser.add_argument("--parallel-rounds", type=int, default=10,
                        help="rounds of the data-parallel section")
    args = parser.parse_args()

    ag_grads, ag_step = autograd_parts()
    torch_fns = torch_parts()
    with threadpool_limits(limits=1):
        print(_common.MALLOC)
        for dtype in (np.float64, np.float32):
            x, onehot, params = make_problem(dtype)
            main_grads, par_grads = main_table_grads(dtype), parallel_grads(dtype)
            grads_impls = {**main_grads, **par_grads, "HIPS autograd": ag_grads}
            steps = {"hand-written NumPy": numpy_step,
                     **{name: sgd(fn) for name, fn in main_grads.items()},
                     "HIPS autograd": ag_step}
            if torch_fns is not None:
                grads_impls["PyTorch eager"] = torch_fns[0]
                steps["PyTorch eager"] = torch_fns[1]
            check_same_gradients(grads_impls, params, x, onehot, dtype)
            print_main_table(steps, (params, x, onehot), dtype, args.rounds)
            _common.print_probe()
            par_steps = parallel_steps(dtype, par_grads)
            check_same_gradients(par_steps, params, x, onehot, dtype, reference=numpy_step)
            for step in par_steps.values():  # compiled "threads" steps fix their schedules
                for _ in range(2):
                    step(params, x, onehot)
            print_parallel_section(par_steps, (params, x, onehot), dtype, args.parallel_rounds)
            _common.print_probe()


if __name__ == "__main__":
    main()
