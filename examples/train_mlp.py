"""Train an MLP on scikit-learn's digits with lazy, data-parallel forward and backward passes.

    python examples/train_mlp.py [--out DIR] [--epochs N] [--shards K] [--scheduler S]

Two hidden ReLU layers and a softmax cross-entropy, trained by plain SGD whose
learning rate decays linearly to zero.
Every step builds one task graph: the minibatch is split into K shards whose
forward passes (and, through ``tg.grad``, backward passes) are independent
branches that the "threads" scheduler runs in parallel.  Prints the loss per
epoch and the test accuracy; writes the loss curve (DIR/loss.png) and the
graph of one step (DIR/mlp_step.svg).
"""

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

import taskgrad as tg
import taskgrad.numpy as tnp

LAYERS = (64, 128, 64, 10)
NAMES = ("W1", "b1", "W2", "b2", "W3", "b3")


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy_vjp(ans, logits, onehot):
    """The textbook gradient of mean softmax cross-entropy: (softmax - onehot) / n."""
    return lambda g: g * (softmax(logits) - onehot) / len(logits)


@tg.delayed(vjp=cross_entropy_vjp)
def cross_entropy(logits, onehot):
    """Mean softmax cross-entropy of the rows of ``logits``, computed stably."""
    z = logits - logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - (z * onehot).sum(axis=1)))


def predict(params, X):
    """The network's logits, as a lazy graph: (dot + bias -> ReLU) twice, then dot + bias."""
    W1, b1, W2, b2, W3, b3 = params
    h = tnp.maximum(tnp.dot(X, W1) + b1, 0.0)
    h = tnp.maximum(tnp.dot(h, W2) + b2, 0.0)
    return tnp.dot(h, W3) + b3


def init_params(rng):
    """He initialisation for ReLU layers, zero biases."""
    params = []
    for fan_in, fan_out in zip(LAYERS, LAYERS[1:]):
        params += [rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out)), np.zeros(fan_out)]
    return params


def step_graph(params, X, Y, shards):
    """The loss of one minibatch and its gradients: one lazy graph, nothing run."""
    leaves = [tg.delayed(p, name=n) for n, p in zip(NAMES, params)]
    losses = []
    for k, idx in enumerate(np.array_split(np.arange(len(X)), min(shards, len(X)))):
        x = tg.delayed(X[idx], name=f"X[{k}]")
        y = tg.delayed(Y[idx], name=f"Y[{k}]")
        losses.append(cross_entropy(predict(leaves, x), y) * (len(idx) / len(X)))
    loss = sum(losses[1:], losses[0])
    return loss, tg.grad(loss, leaves)


def load_data(seed):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def accuracy(params, X, y, scheduler):
    logits = predict([tg.delayed(p) for p in params], tg.delayed(X)).compute(scheduler=scheduler)
    return float(np.mean(logits.argmax(axis=1) == y))


def train(args, X_train, y_train, X_test, y_test):
    rng = np.random.default_rng(args.seed)
    params = init_params(rng)
    onehot = np.eye(LAYERS[-1])[y_train]
    steps_per_epoch = len(X_train) // args.batch  # the ragged last batch is dropped
    step_losses, epoch_losses = [], []
    with tqdm(total=args.epochs * steps_per_epoch, desc="training", unit="step") as bar:
        for epoch in range(1, args.epochs + 1):
            order = rng.permutation(len(X_train))
            losses = []
            for step in range(steps_per_epoch):
                idx = order[step * args.batch:(step + 1) * args.batch]
                loss, grads = step_graph(params, X_train[idx], onehot[idx], args.shards)
                value, *gradients = tg.compute(loss, *grads, scheduler=args.scheduler)
                lr = args.lr * (1 - bar.n / bar.total)  # linear decay settles the last epochs
                params = [p - lr * g for p, g in zip(params, gradients)]
                losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.3f}")
            step_losses += losses
            epoch_losses.append(float(np.mean(losses)))
            test_acc = accuracy(params, X_test, y_test, args.scheduler)
            bar.write(f"epoch {epoch:2d}/{args.epochs}  loss {epoch_losses[-1]:.4f}  "
                      f"test accuracy {test_acc:.1%}")
    return params, step_losses, epoch_losses


def plot_losses(step_losses, epoch_losses, steps_per_epoch, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(1, len(step_losses) + 1) / steps_per_epoch, step_losses,
            lw=0.7, alpha=0.6, label="minibatch")
    ax.plot(np.arange(1, len(epoch_losses) + 1), epoch_losses, "o-", label="epoch mean")
    ax.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="MLP on digits")
    ax.legend()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out"), help="output directory")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.2, help="initial rate, decayed linearly to 0")
    parser.add_argument("--shards", type=int, default=4, help="data-parallel branches per step")
    parser.add_argument("--scheduler", default="threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    X_train, X_test, y_train, y_test = load_data(args.seed)
    print(f"digits: {len(X_train)} training and {len(X_test)} test images of 8x8 pixels; "
          f"MLP {' -> '.join(map(str, LAYERS))}, batch {args.batch} in {args.shards} shards "
          f"on {args.scheduler!r}")
    began = time.perf_counter()
    params, step_losses, epoch_losses = train(args, X_train, y_train, X_test, y_test)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - began:.1f} s")
    print(f"test accuracy: {accuracy(params, X_test, y_test, args.scheduler):.1%}")

    steps_per_epoch = len(step_losses) // args.epochs
    plot_losses(step_losses, epoch_losses, steps_per_epoch, args.out / "loss.png")
    # two shards show the pattern; graphviz's layout takes ~20x longer for four
    shards = min(args.shards, 2)
    loss, grads = step_graph(params, X_train[:args.batch], np.eye(10)[y_train[:args.batch]],
                             shards)
    tg.visualize(loss, *grads, filename=args.out / "mlp_step.svg")
    tasks = len(set(loss.graph).union(*(g.graph for g in grads)))
    print(f"wrote {args.out / 'loss.png'} and {args.out / 'mlp_step.svg'} "
          f"(one step with {shards} shards: {tasks} tasks)")


if __name__ == "__main__":
    main()
