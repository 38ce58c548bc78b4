"""Sum of squares as a task graph: build it lazily, draw it, then compute it.

    python examples/sum_of_squares.py [--out DIR] [-n N]

Writes DIR/sumlist.svg (one ellipse per task, a box per result) and prints the sum.
"""

import argparse
from pathlib import Path

import taskgrad as tg


@tg.delayed
def square(x):
    return x * x


@tg.delayed
def sum_list(items):
    return sum(items)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="where to write sumlist.svg")
    parser.add_argument("-n", type=int, default=10, help="sum the squares of 1..n")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    items = range(1, args.n + 1)
    total = sum_list([square(i) for i in items])
    print(f"built {len(total.graph)} tasks ({args.n} x square, 1 x sum_list); nothing ran yet")

    path = args.out / "sumlist.svg"
    total.visualize(filename=path)
    print(f"wrote the graph to {path}")

    print(f"sum of squares of 1..{args.n} = {total.compute()}")


if __name__ == "__main__":
    main()
