"""The classic backprop example: f = (x + y) * z at x=1, y=3, z=-3.

    python examples/computation_graph.py [--out DIR]

Prints every node's value and its gradient df/dnode, and writes the forward
graph (DIR/forward.svg) and the forward plus backward graph (DIR/backward.svg).
"""

import argparse
from pathlib import Path

import taskgrad as tg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="where to write the SVGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    x = tg.delayed(1.0, name="x")
    y = tg.delayed(3.0, name="y")
    z = tg.delayed(-3.0, name="z")
    q = x + y
    f = q * z

    nodes = {"x": x, "y": y, "z": z, "q = x + y": q, "f = q * z": f}
    grads = tg.grad(f, list(nodes.values()))
    values = tg.compute(*nodes.values(), *grads)  # one run: forward once, then backward
    n = len(nodes)
    for (name, _), value, grad in zip(nodes.items(), values[:n], values[n:]):
        print(f"{name:10s} value = {value:5.1f}   df/d{name.split()[0]} = {grad:5.1f}")

    forward, backward = args.out / "forward.svg", args.out / "backward.svg"
    tg.visualize(f, filename=forward, rankdir="LR")
    tg.visualize(f, *grads, filename=backward, rankdir="LR")
    print(f"wrote {forward} and {backward}")


if __name__ == "__main__":
    main()
