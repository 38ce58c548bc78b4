"""Differentiate a composite function, f(x) = exp(sin(x**2)), against its analytic derivative.

    python examples/composite_function.py

f'(x) = exp(sin(x**2)) * cos(x**2) * 2x; the lazy gradient graph must agree.
"""

import numpy as np

import taskgrad as tg
import taskgrad.numpy as tnp


def analytic(x):
    return np.exp(np.sin(x**2)) * np.cos(x**2) * 2 * x


def main():
    points = np.linspace(-2.0, 2.0, 9)
    x = tg.delayed(points, name="x")
    f = tnp.exp(tnp.sin(x**2))
    # f is elementwise, so the gradient of its sum is f'(x) at every point
    dfdx = tg.grad(tnp.sum(f), x)
    values, slopes = tg.compute(f, dfdx)
    expected = analytic(points)

    print(f"{'x':>6} {'f(x)':>10} {'autodiff':>12} {'analytic':>12}")
    for p, v, s, e in zip(points, values, slopes, expected):
        print(f"{p:6.2f} {v:10.6f} {s:12.8f} {e:12.8f}")
    error = np.max(np.abs(slopes - expected))
    print(f"max |autodiff - analytic| = {error:.2e}")
    if error > 1e-12:
        raise SystemExit("the gradient disagrees with the analytic derivative")


if __name__ == "__main__":
    main()
