"""One SGD training step of an MLP 784-256-256-10 (ReLU, softmax cross-entropy,
batch 256), float64 and float32, in one process with BLAS threads = 1.

Compared: hand-written NumPy forward+backward (the baseline), taskgrad with
fine-grained ``tnp`` ops and with coarse plain-NumPy ``@tg.delayed`` layers on
``"sync"``, HIPS autograd, PyTorch eager (CPU, one thread), and a 2-shard
data-parallel taskgrad step on ``"threads"`` against ``"sync"``.  Every
implementation's gradients are checked against the baseline first.  Times are
medians over interleaved rounds (the machine is shared and noisy), and a probe
measures how much of a second core is actually free during the run.

Run: ``PYTHONPATH=src python benchmarks/mlp_step.py [--rounds N]``
"""

import _common  # noqa: F401  (pins BLAS to one thread before NumPy loads)

import argparse  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import taskgrad as tg  # noqa: E402
import taskgrad.numpy as tnp  # noqa: E402

SIZES = (784, 256, 256, 10)
BATCH = 256
LR = 0.1


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


def numpy_step(params, x, onehot):
    loss, grads = numpy_grads(params, x, onehot)
    return loss, [p - LR * g for p, g in zip(params, grads)]


_halves_pool = ThreadPoolExecutor(2)


def numpy_halves_step(params, x, onehot, threads):
    """Hand-written NumPy on two half batches, one after the other or on two threads: the
    ceiling for any 2-shard data-parallel speed-up on this machine, measured in the same run."""
    half = len(x) // 2
    parts = [(x[:half], onehot[:half]), (x[half:], onehot[half:])]
    run = _halves_pool.map if threads else map
    grads = [g for _, g in run(lambda part: numpy_grads(params, *part), parts)]
    return None, [p - LR * (a + b) / 2 for p, a, b in zip(params, *grads)]


# ---------------------------------------------------------------- taskgrad

def mlp_loss(m, x, onehot, W1, b1, W2, b2, W3, b3):
    """The loss written once for any NumPy-like module ``m`` (``tnp``, ``autograd.numpy``)."""
    h1 = m.maximum(x @ W1 + b1, 0.0)
    h2 = m.maximum(h1 @ W2 + b2, 0.0)
    z = h2 @ W3 + b3
    z = z - m.max(z, axis=1, keepdims=True)
    logp = z - m.log(m.sum(m.exp(z), axis=1, keepdims=True))
    return -m.mean(m.sum(onehot * logp, axis=1))


def tnp_loss(x, onehot, *params):
    return mlp_loss(tnp, x, onehot, *params)


@tg.delayed
def dense_relu(x, W, b):
    return np.maximum(x @ W + b, 0.0)


@tg.delayed
def softmax_cross_entropy(x, W, b, onehot):
    z = x @ W + b
    z = z - np.max(z, axis=1, keepdims=True)
    logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
    return -np.mean(np.sum(onehot * logp, axis=1))


def layered_loss(x, onehot, W1, b1, W2, b2, W3, b3):
    return softmax_cross_entropy(dense_relu(dense_relu(x, W1, b1), W2, b2), W3, b3, onehot)


def taskgrad_grads(loss_fn, params, x, onehot, scheduler="sync"):
    leaves = [tg.delayed(p) for p in params]
    y = loss_fn(x, onehot, *leaves)
    loss, *grads = tg.compute(y, *tg.grad(y, leaves), scheduler=scheduler)
    return loss, grads


def taskgrad_step(loss_fn, params, x, onehot, scheduler="sync"):
    """Forward and backward as one graph; the SGD update in NumPy, as the baseline does."""
    loss, grads = taskgrad_grads(loss_fn, params, x, onehot, scheduler)
    return loss, [p - LR * g for p, g in zip(params, grads)]


def sharded_grads(params, x, onehot, scheduler, shards=2):
    """Data parallel: each shard's forward and backward are independent branches."""
    leaves = [tg.delayed(p) for p in params]
    parts = np.array_split(np.arange(len(x)), shards)
    losses, grads = [], []
    for idx in parts:
        y = layered_loss(x[idx], onehot[idx], *leaves) * (len(idx) / len(x))
        losses.append(y)
        grads.append(tg.grad(y, leaves))
    total = [sum(gs[1:], gs[0]) for gs in zip(*grads)]
    loss, *summed = tg.compute(sum(losses[1:], losses[0]), *total, scheduler=scheduler)
    return loss, summed


def sharded_step(params, x, onehot, scheduler, shards=2):
    loss, grads = sharded_grads(params, x, onehot, scheduler, shards)
    return loss, [p - LR * g for p, g in zip(params, grads)]


# ---------------------------------------------------------------- HIPS autograd

def autograd_parts():
    import autograd
    import autograd.numpy as anp

    def loss(params, x, onehot):
        return mlp_loss(anp, x, onehot, *params)

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

def check_same_gradients(impls, params, x, onehot, dtype):
    ref_loss, ref = numpy_grads(params, x, onehot)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()

    ag_grads, ag_step = autograd_parts()
    torch_fns = torch_parts()
    with threadpool_limits(limits=1):
        print(_common.MALLOC)
        _common.print_probe()
        for dtype in (np.float64, np.float32):
            x, onehot, params = make_problem(dtype)
            grads_impls = {
                "taskgrad tnp (sync)": lambda p, x, o: taskgrad_grads(tnp_loss, p, x, o),
                "taskgrad layers (sync)": lambda p, x, o: taskgrad_grads(layered_loss, p, x, o),
                "taskgrad 2 shards (threads)": lambda p, x, o: sharded_grads(p, x, o, "threads"),
                "HIPS autograd": ag_grads,
            }
            steps = {
                "hand-written NumPy": numpy_step,
                "taskgrad tnp (sync)": lambda p, x, o: taskgrad_step(tnp_loss, p, x, o),
                "taskgrad layers (sync)": lambda p, x, o: taskgrad_step(layered_loss, p, x, o),
                "HIPS autograd": ag_step,
            }
            if torch_fns is not None:
                grads_impls["PyTorch eager"] = torch_fns[0]
                steps["PyTorch eager"] = torch_fns[1]
            steps["NumPy 2 halves (one thread)"] = \
                lambda p, x, o: numpy_halves_step(p, x, o, threads=False)
            steps["NumPy 2 halves (2 threads)"] = \
                lambda p, x, o: numpy_halves_step(p, x, o, threads=True)
            steps["taskgrad 2 shards (sync)"] = lambda p, x, o: sharded_step(p, x, o, "sync")
            steps["taskgrad 2 shards (threads)"] = \
                lambda p, x, o: sharded_step(p, x, o, "threads")
            check_same_gradients(grads_impls, params, x, onehot, dtype)
            wall, cpu = _common.interleaved_medians(steps, (params, x, onehot), args.rounds, 5)
            print(f"\n{np.dtype(dtype).name}: medians of {args.rounds} rounds of 5 steps each, "
                  "shuffled (gradients checked equal first); cpu = this process's CPU time")
            print(f"{'implementation':30s} {'wall ms':>8s} {'x NumPy':>8s} {'x torch':>8s} "
                  f"{'cpu ms':>8s} {'x NumPy':>8s} {'x torch':>8s}")
            for name in wall:
                cells = []
                for medians in (wall, cpu):
                    t, base = medians[name], medians["hand-written NumPy"]
                    torch_time = medians.get("PyTorch eager")
                    vs_torch = f"{t / torch_time:8.2f}" if torch_time else f"{'-':>8s}"
                    cells.append(f"{t * 1e3:8.2f} {t / base:8.2f} {vs_torch}")
                print(f"{name:30s} {' '.join(cells)}")
            speedup = wall["taskgrad 2 shards (sync)"] / wall["taskgrad 2 shards (threads)"]
            print(f"2-shard data parallel (wall): threads {speedup:.2f}x faster than sync")
            ceiling = (wall["NumPy 2 halves (one thread)"]
                       / wall["NumPy 2 halves (2 threads)"])
            print(f"  (ceiling in this run: hand-written NumPy halves on 2 threads "
                  f"{ceiling:.2f}x faster than on one)")
        _common.print_probe()


if __name__ == "__main__":
    main()
