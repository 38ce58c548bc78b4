"""Drawing task graphs with graphviz, the way dask draws them.

Each task is an ellipse labelled with its function (the prefix of its key),
and its result is a box between it and the tasks that read it.  Leaves are
boxes labelled with their name and a short summary of their value.  Tasks
built by ``grad`` (``role == "backward"``) get a different colour and a bold
dashed border, so the reversed graph stands out; a legend explains the
styles.  After a run, nodes can be shaded by execution order or run time.

Graphviz's layout grows worse than quadratically with the number of nodes,
so a graph with more than ``max_tasks`` tasks is drawn as a summary: one node
per (function, role) group with its count, and edges counting the
dependencies between groups.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import graphviz

from .delayed import Delayed, collect_graph, funcname, unpack_delayed
from .graph import Literal, Task, postorder

__all__ = ["visualize", "repr_mimebundle", "build_graph", "GraphvizNotFoundError"]

RANKDIRS = ("TB", "BT", "LR", "RL")
COLORINGS = (None, "order", "time")
SOURCE_FORMATS = ("dot", "gv")
MAX_TASKS = 500  # above this, draw a summary; dot takes seconds from here on
INLINE_MAX_TASKS = 100  # graphs shown in a notebook without any call
MAX_LABEL = 40
DARK = 0.6  # ramp positions above this get white text

FORWARD_STYLE = {"shape": "ellipse", "style": "filled", "fillcolor": "#dbe9f6",
                 "color": "#1f4e79"}
BACKWARD_STYLE = {"shape": "ellipse", "style": "filled,dashed,bold", "fillcolor": "#fde0c5",
                  "color": "#c0392b", "penwidth": "2"}
DATA_STYLE = {"shape": "box", "width": "0.3", "height": "0.2", "color": "#555555"}
LEAF_STYLE = {"shape": "box", "style": "filled", "fillcolor": "#eeeeee", "color": "#555555"}
# light to dark: execution order / run time ramps (a short viridis-like scale)
RAMP = ((0.99, 0.91, 0.15), (0.37, 0.79, 0.38), (0.13, 0.57, 0.55), (0.23, 0.32, 0.55))

_TOKEN = re.compile(r"[0-9a-f]{9,}")


class GraphvizNotFoundError(RuntimeError):
    """Graphviz's ``dot`` program, which lays graphs out, is not installed."""


INSTALL_HINT = (
    "graphviz's 'dot' program was not found on PATH, so the graph cannot be laid out. "
    "Install it with your system's package manager, e.g. 'apt-get install graphviz' "
    "(Debian/Ubuntu), 'brew install graphviz' (macOS), 'conda install -c conda-forge "
    "graphviz', or from https://graphviz.org/download/ (Windows); "
    "format='dot' writes the graph's source without it."
)


# ---------------------------------------------------------------- labels

def escape(text, limit=MAX_LABEL):
    """Make any text a safe plain graphviz label (no HTML, entities or escapes)."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(text))
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return graphviz.escape(text.replace("&", "&amp;"))


def key_name(key):
    """The readable part of a key, tokens dropped: ``'vjp-mul-3fa9c0e12-0'`` -> ``'vjp-mul-0'``."""
    if isinstance(key, tuple) and key:
        key = key[0]
    text = str(key)
    words = [w for w in text.split("-") if not _TOKEN.fullmatch(w)]
    return "-".join(words) if words else text


def task_label(task):
    """What an ellipse says: the key's prefix, or the function's name."""
    name = key_name(task.key)
    return name or funcname(task.func)


def value_summary(value):
    """A short description of a leaf's value: numbers in full, arrays by dtype and shape."""
    if isinstance(value, Delayed):  # (its attributes are Delayeds too)
        return "Delayed"
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if type(shape) is not tuple:  # not an array's shape
        shape = None
    if shape is not None and dtype is not None and shape != ():
        return f"{dtype}[{', '.join(map(str, shape))}]"
    if isinstance(value, (bool, int, float, complex, str, bytes)) or shape == ():
        text = repr(value.item() if shape == () and hasattr(value, "item") else value)
        if len(text) <= 16:
            return text
    return type(value).__name__


# ---------------------------------------------------------------- inputs

def _graph_and_outputs(objs):
    """The graph to draw and its requested keys, from Delayeds, containers or graphs."""
    graph, outputs, delayeds = {}, [], {}
    for obj in objs:
        if isinstance(obj, dict) and obj and all(isinstance(t, Task) for t in obj.values()):
            needed = {dep for task in obj.values() for dep in task.dependencies}
            outputs += [k for k in obj if k not in needed]  # a raw graph's roots
            graph.update(obj)
            continue
        _, found = unpack_delayed(obj)
        if not found:
            raise TypeError(f"visualize expects Delayed objects or task graphs, got {obj!r}")
        delayeds.update(found)
    graph.update(collect_graph(delayeds.values()))
    return graph, list(dict.fromkeys([*outputs, *delayeds]))


def _ramp(fraction):
    fraction = min(max(fraction, 0.0), 1.0) * (len(RAMP) - 1)
    i = min(int(fraction), len(RAMP) - 2)
    t = fraction - i
    rgb = [a + (b - a) * t for a, b in zip(RAMP[i], RAMP[i + 1])]
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _shades(graph, outputs, color, profile):
    """Per key: (position on the colour ramp in [0, 1], tooltip), for ``color=``."""
    if color not in COLORINGS:
        raise ValueError(f"color must be one of {COLORINGS}, got {color!r}")
    if color is None:
        return {}
    records = {}
    if profile is not None:
        for rec in getattr(profile, "results", profile):
            records[rec.key] = rec
    if color == "time":
        if not records:
            raise ValueError("color='time' needs measured times: pass profile=<a Profiler "
                             "that watched a run> (or its records)")
        times = {k: r.end - r.start for k, r in records.items() if k in graph}
        top = max(times.values(), default=0.0) or 1.0
        return {k: (t / top, f"{t * 1e3:.3g} ms") for k, t in times.items()}
    if records:
        # ties in start time (fast tasks) keep the order the run reported them in
        ran = sorted((r.start, i, k) for i, (k, r) in enumerate(records.items()) if k in graph)
        order = [k for _, _, k in ran]
    else:
        order = [k for k in postorder(graph, outputs) if type(graph[k]) is not Literal]
    last = max(len(order) - 1, 1)
    return {k: (i / last, f"#{i + 1} run") for i, k in enumerate(order)}


# ---------------------------------------------------------------- building

def build_graph(*objs, rankdir="TB", color=None, profile=None, max_tasks=MAX_TASKS,
                verbose=False, legend=None):
    """The ``graphviz.Digraph`` for ``objs`` (see :func:`visualize` for the options)."""
    if rankdir not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    graph, outputs = _graph_and_outputs(objs)
    shades = _shades(graph, outputs, color, profile)
    g = graphviz.Digraph(graph_attr={"rankdir": rankdir},
                         node_attr={"fontname": "Helvetica", "fontsize": "11"},
                         edge_attr={"arrowsize": "0.6", "fontname": "Helvetica",
                                    "fontsize": "10"})
    if max_tasks is not None and len(graph) > max_tasks:
        _draw_summary(g, graph, max_tasks)
    else:
        _draw_tasks(g, graph, outputs, shades, verbose)
    has_backward = any(t.role == "backward" for t in graph.values())
    if legend or (legend is None and (has_backward or shades)):
        _draw_legend(g, color)
    return g


def _draw_tasks(g, graph, outputs, shades, verbose):
    wanted = set(outputs)
    order = postorder(graph, outputs)  # declaration order steers graphviz's layout
    ids = {key: str(i) for i, key in enumerate(order)}
    for key in order:
        task = graph[key]
        i = ids[key]
        data = {**DATA_STYLE, "label": escape(key) if verbose else ""}
        if key in wanted:
            data["penwidth"] = "2"
        if type(task) is Literal:
            label = key_name(key)
            if not verbose:
                label = f"{label} = {value_summary(task.value)}"
            data.update(LEAF_STYLE, label=escape(label))
            g.node(f"d{i}", tooltip=escape(key), **data)
            continue
        style = dict(BACKWARD_STYLE if task.role == "backward" else FORWARD_STYLE)
        tooltip = str(key)
        if key in shades:
            shade, note = shades[key]
            style["fillcolor"] = _ramp(shade)
            if shade > DARK:
                style["fontcolor"] = "white"
            tooltip = f"{key}: {note}"
        g.node(f"f{i}", label=escape(task_label(task)), tooltip=escape(tooltip), **style)
        g.node(f"d{i}", tooltip=escape(key), **data)
        g.edge(f"f{i}", f"d{i}")
        for dep in task.dependencies:
            if dep in ids:
                g.edge(f"d{ids[dep]}", f"f{i}")


def _draw_summary(g, graph, max_tasks):
    """One node per (function, role) group; say so on the drawing and as a warning."""
    group_of, counts, edges = {}, {}, {}
    for key, task in graph.items():
        kind = "leaf" if type(task) is Literal else task.role
        group = (key_name(key) if kind == "leaf" else task_label(task), kind)
        group_of[key] = group
        counts[group] = counts.get(group, 0) + 1
    for key, task in graph.items():
        for dep in task.dependencies:
            if dep in group_of:
                edge = (group_of[dep], group_of[key])
                edges[edge] = edges.get(edge, 0) + 1
    ids = {group: f"g{i}" for i, group in enumerate(counts)}
    for (name, kind), n in counts.items():
        style = {"leaf": LEAF_STYLE, "backward": BACKWARD_STYLE}.get(kind, FORWARD_STYLE)
        g.node(ids[name, kind], label=escape(f"{name} ×{n}"), **style)
    for (a, b), n in edges.items():
        g.edge(ids[a], ids[b], label=str(n) if n > 1 else "")
    message = (f"graph of {len(graph)} tasks (more than max_tasks={max_tasks}) drawn as a "
               f"summary: one node per function with its count ({len(counts)} groups); "
               "pass max_tasks=None to draw every task")
    g.attr(label=escape(message, limit=None), labelloc="t")
    warnings.warn(message, stacklevel=4)


def _draw_legend(g, color):
    with g.subgraph(name="cluster_legend") as lg:
        lg.attr(label="legend", fontname="Helvetica", fontsize="10", color="#999999")
        lg.node("legend_forward", label="forward task", **FORWARD_STYLE)
        lg.node("legend_backward", label="backward task (gradient)", **BACKWARD_STYLE)
        lg.node("legend_data", label="result", **{**DATA_STYLE, "width": "0.6"})
        lg.node("legend_leaf", label="leaf = value", **LEAF_STYLE)
        if color is not None:
            what = "run order" if color == "order" else "run time"
            lg.node("legend_low", label="first" if color == "order" else "fast",
                    shape="box", style="filled", fillcolor=_ramp(0.0))
            lg.node("legend_high", label="last" if color == "order" else "slow",
                    shape="box", style="filled", fillcolor=_ramp(1.0), fontcolor="white")
            lg.edge("legend_low", "legend_high", label=what, style="dotted")
        lg.edge("legend_forward", "legend_backward", style="invis")
        lg.edge("legend_data", "legend_leaf", style="invis")


# ---------------------------------------------------------------- output

def render(g, format):
    """Lay ``g`` out as bytes in ``format``; a missing ``dot`` gets an install hint."""
    if format in SOURCE_FORMATS:
        return g.source.encode()
    try:
        return g.pipe(format=format)
    except graphviz.ExecutableNotFound as exc:
        raise GraphvizNotFoundError(INSTALL_HINT) from exc


def _target(filename, format):
    """The path and format to write: the suffix gives the format unless one is given."""
    path = Path(filename)
    suffix = path.suffix[1:].lower()
    known = suffix in graphviz.FORMATS
    if format is None:
        if suffix and not known:
            raise ValueError(f"cannot tell the format from {str(path)!r}: unknown suffix "
                             f"'.{suffix}'; pass format='svg', 'png', 'pdf' or 'dot'")
        format = suffix or "svg"
    format = format.lower()
    if format not in graphviz.FORMATS:
        raise ValueError(f"unknown format {format!r}; use 'svg', 'png', 'pdf' or 'dot'")
    if known:
        if suffix != format and {suffix, format} != {"jpg", "jpeg"}:
            raise ValueError(f"filename {str(path)!r} has suffix '.{suffix}' but "
                             f"format={format!r}; make them agree")
        return path, format
    return path.with_name(f"{path.name}.{format}"), format


def visualize(*objs, filename=None, format=None, rankdir="TB", color=None, profile=None,
              max_tasks=MAX_TASKS, verbose=False, legend=None):
    """Draw the task graph of Delayed objects (or containers of them, or graphs).

    - ``filename`` (str or path): write the drawing there; its suffix gives the
      format unless ``format`` is given, and ``.format`` is appended when it has
      no suffix.  ``format``: ``'svg'`` (default), ``'png'``, ``'pdf'``,
      ``'dot'`` (graphviz source, needs no ``dot`` program) or any graphviz format.
    - ``rankdir``: ``'TB'`` (top to bottom), ``'BT'``, ``'LR'`` or ``'RL'``.
    - ``color``: ``'order'`` shades tasks by execution order (the run's order
      when ``profile`` is given, else the order ``sync`` would use); ``'time'``
      by run time, from ``profile`` (a :class:`~taskgrad.diagnostics.Profiler`
      or its records).
    - ``max_tasks``: above this many tasks draw a summary (``None``: never).
    - ``verbose``: label results with their full keys; ``legend``: force it on
      or off (default: shown when there are backward tasks or colours).

    Returns the ``graphviz.Digraph`` (its ``.source`` is the dot text; in
    Jupyter it displays as the picture; without ``filename``, ``format``
    becomes its ``.format`` for a later ``render()``).
    """
    g = build_graph(*objs, rankdir=rankdir, color=color, profile=profile,
                    max_tasks=max_tasks, verbose=verbose, legend=legend)
    if filename is None:
        if format is not None:
            if format not in graphviz.FORMATS:
                raise ValueError(f"unknown format {format!r}; use 'svg', 'png', 'pdf' or 'dot'")
            g.format = format  # what g.render() / g.pipe() will produce
        return g
    path, format = _target(filename, format)
    path.write_bytes(render(g, format))
    return g


def repr_mimebundle(d, include=None, exclude=None):
    """Jupyter's rich display of a Delayed: its graph as SVG when small, else text."""
    graph = collect_graph([d])
    text = f"{d!r}: a graph of {len(graph)} task{'s' if len(graph) != 1 else ''}"
    bundle = {}
    wants_svg = (include is None or "image/svg+xml" in include) and \
        not (exclude and "image/svg+xml" in exclude)
    if wants_svg and len(graph) <= INLINE_MAX_TASKS:
        try:
            bundle["image/svg+xml"] = render(build_graph(d), "svg").decode()
        except GraphvizNotFoundError:
            text += " (install graphviz to see it drawn)"
    else:
        text += "; call .visualize() to draw it"
    if (include is None or "text/plain" in include) and not (exclude and "text/plain" in exclude):
        bundle["text/plain"] = text
    return bundle
