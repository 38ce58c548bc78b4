"""visualize: formats, filenames, labels, escaping, backward styling, colours, summaries, repr."""

import html
import os
import re
import xml.dom.minidom
from pathlib import Path

import graphviz
import numpy as np
import pytest

import taskgrad as tg
from taskgrad.graph import Task
from taskgrad.visualize import (
    GraphvizNotFoundError, build_graph, escape, key_name, repr_mimebundle, value_summary,
)


@tg.delayed
def square(x):
    return x * x


@tg.delayed
def sum_list(xs):
    return sum(xs)


def sum_of_squares(n=3):
    return sum_list([square(i) for i in range(n)])


def svg_texts(svg):
    """The visible text of an SVG drawing, unescaped."""
    xml.dom.minidom.parseString(svg)  # well-formed
    return [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg)]


def backward_copy(d):
    """A Delayed like ``d`` whose top task is marked as built by grad."""
    t = d.task
    task = Task(f"grad-{t.key}", t.func, t.args, t.kwargs, t.dependencies, role="backward")
    return tg.Delayed(task.key, task, d.dependencies)


# ---------------------------------------------------------------- formats and files

def test_svg_file_holds_function_names(tmp_path):
    target = tmp_path / "sumlist.svg"
    tg.visualize(sum_of_squares(), filename=str(target))
    texts = svg_texts(target.read_text())
    assert texts.count("square") == 3
    assert "sum_list" in texts


def test_png_file_has_png_magic_bytes(tmp_path):
    sum_of_squares().visualize(filename=tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pdf_file(tmp_path):
    sum_of_squares().visualize(filename=tmp_path / "g", format="pdf")
    assert (tmp_path / "g.pdf").read_bytes()[:5] == b"%PDF-"


def test_dot_source_needs_no_layout(tmp_path):
    sum_of_squares().visualize(filename=tmp_path / "g.dot")
    source = (tmp_path / "g.dot").read_text()
    assert source.startswith("digraph")
    assert "label=square" in source and "label=sum_list" in source


def test_no_suffix_gets_format_appended_and_default_is_svg(tmp_path):
    d = sum_of_squares()
    d.visualize(filename=tmp_path / "plain")
    d.visualize(filename=str(tmp_path / "named"), format="png")
    d.visualize(filename=tmp_path / "step.1", format="svg")  # '.1' is not a format
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.png", "plain.svg", "step.1.svg"]


def test_suffix_disagreeing_with_format_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="suffix '.svg' but format='png'"):
        sum_of_squares().visualize(filename=tmp_path / "g.svg", format="png")
    assert not list(tmp_path.iterdir())


def test_unknown_suffix_or_format_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown suffix"):
        sum_of_squares().visualize(filename=tmp_path / "g.graph")
    with pytest.raises(ValueError, match="unknown format 'bogus'"):
        sum_of_squares().visualize(filename=tmp_path / "g", format="bogus")


def test_without_filename_returns_digraph_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = tg.visualize(sum_of_squares())
    assert isinstance(g, graphviz.Digraph)
    assert "sum_list" in g.source
    assert tg.visualize(sum_of_squares(), format="png").format == "png"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("rankdir", ["TB", "BT", "LR", "RL"])
def test_rankdir(rankdir):
    assert f"rankdir={rankdir}" in build_graph(sum_of_squares(), rankdir=rankdir).source


def test_bad_rankdir_and_bad_objects():
    with pytest.raises(ValueError, match="rankdir"):
        tg.visualize(sum_of_squares(), rankdir="UP")
    with pytest.raises(TypeError, match="Delayed"):
        tg.visualize(42)


# ---------------------------------------------------------------- what is drawn

def node_lines(source):
    return [ln.strip() for ln in source.splitlines() if re.match(r"\s*[fd]\d+ \[", ln)]


def test_one_ellipse_per_task_and_one_box_per_result():
    source = build_graph(sum_of_squares(3)).source
    lines = node_lines(source)
    assert sum("shape=ellipse" in ln for ln in lines) == 4
    assert sum("shape=box" in ln for ln in lines) == 4
    # results sit between tasks: square -> box -> sum_list
    assert len(re.findall(r"f\d+ -> d\d+", source)) == 4
    assert len(re.findall(r"d\d+ -> f\d+", source)) == 3


def test_leaves_show_name_and_value_summary():
    x = tg.delayed(1.5, name="x")
    w = tg.delayed(np.zeros((3, 4), dtype=np.float32), name="W")
    source = build_graph(x * w.sum()).source
    assert '"x = 1.5"' in source
    assert '"W = float32[3, 4]"' in source
    assert "label=mul" in source and "label=sum" in source


def test_shared_node_drawn_once():
    a = square(2)
    b = sum_list([a, a + 1, a * 2])
    source = build_graph(b).source
    assert source.count("label=square") == 1


def test_several_objects_and_containers_share_one_drawing():
    a = square(2)
    source = build_graph(a + 1, {"k": [a * 2]}).source
    assert source.count("label=square") == 1
    assert "label=add" in source and "label=mul" in source


def test_a_raw_graph_can_be_drawn_alone_or_with_delayeds():
    source = build_graph(dict(sum_of_squares(2).graph)).source
    assert "label=sum_list" in source
    extra = square(7) + 1
    source = build_graph(dict(sum_of_squares(2).graph), extra).source
    assert "label=sum_list" in source and "label=add" in source
    assert source.count("label=square") == 3
    assert extra.key in source


def test_name_replaces_function_name_in_label():
    f = tg.delayed(lambda v: v, name="identity")
    assert "label=identity" in build_graph(f(1)).source
    assert "label=lambda" in build_graph(tg.delayed(lambda v: v)(1)).source


def test_key_name_and_value_summary():
    assert key_name("add-3fa9c0e12") == "add"
    assert key_name("my-task") == "my-task"
    assert key_name("vjp-mul-7b578b4b1-0-7b578b4b2") == "vjp-mul-0"
    assert key_name("3fa9c0e12ab") == "3fa9c0e12ab"
    assert key_name(("x", 1)) == "x"
    assert value_summary(3) == "3"
    assert value_summary(np.float64(2.0)) == "2.0"
    assert value_summary(np.ones((2, 5))) == "float64[2, 5]"
    assert value_summary("a" * 100) == "str"
    assert value_summary(object()) == "object"


def test_verbose_labels_results_with_keys():
    d = square(3)
    assert d.key in build_graph(d, verbose=True).source


# ---------------------------------------------------------------- escaping

HOSTILE = ['<lambda>', 'a<b>&"c"{d}', '<b>bold</b>', 'back\\slash\\n', '{x|y}', '&amp;',
           "tab\tnl\n"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_function_names_render_verbatim(name, tmp_path):
    f = tg.delayed(lambda v: v, name=name)
    leaf = tg.delayed(2, name=name + "-leaf")
    target = tmp_path / "h.svg"
    tg.visualize(f(leaf), filename=target)
    texts = svg_texts(target.read_text())
    shown = "".join(ch if ch.isprintable() else " " for ch in name)
    assert shown in texts
    assert f"{shown}-leaf = 2" in texts


def test_long_labels_are_shortened():
    assert len(str(escape("x" * 500))) <= 40


# ---------------------------------------------------------------- backward tasks

def test_backward_tasks_styled_apart_with_legend():
    fwd = square(3)
    bwd = backward_copy(square(4))
    source = build_graph(fwd, bwd).source
    lines = node_lines(source)
    fwd_line = next(ln for ln in lines if "tooltip=\"square-" in ln and ln.startswith("f"))
    bwd_line = next(ln for ln in lines if "tooltip=\"grad-" in ln and ln.startswith("f"))
    assert "dashed" in bwd_line and "dashed" not in fwd_line
    assert 'color="#c0392b"' in bwd_line and 'color="#c0392b"' not in fwd_line
    assert "cluster_legend" in source and "backward task (gradient)" in source


def test_gradient_graph_draws_backward_tasks_apart():
    x = tg.delayed(1.0, name="x")
    z = tg.delayed(-3.0, name="z")
    f = (x + 3.0) * z
    source = build_graph(f, tg.grad(f, x)).source
    lines = [ln for ln in node_lines(source) if "shape=ellipse" in ln]
    forward = [ln for ln in lines if "dashed" not in ln]
    backward = [ln for ln in lines if "dashed" in ln]
    assert sorted(re.search(r"label=(\S+)", ln).group(1) for ln in forward) == ["add", "mul"]
    assert backward and all('fillcolor="#fde0c5"' in ln for ln in backward)
    assert any('label="vjp-mul-0"' in ln for ln in backward)  # tokens dropped from keys
    assert "cluster_legend" in source


def test_forward_only_graph_has_no_legend_unless_asked():
    assert "cluster_legend" not in build_graph(square(1)).source
    assert "cluster_legend" in build_graph(square(1), legend=True).source


# ---------------------------------------------------------------- colours

def fill_of(source, name):
    line = next(ln for ln in node_lines(source) if f"label={name} " in ln)
    return re.search(r'fillcolor="(#[0-9a-f]{6})"', line).group(1)


def test_color_by_order_shades_first_and_last_apart():
    a = square(1)
    b = sum_list([a])
    source = build_graph(b, color="order").source
    assert fill_of(source, "square") != fill_of(source, "sum_list")
    assert "#1 run" in source and "#2 run" in source


def test_color_by_time_uses_profile_and_needs_one():
    @tg.delayed
    def slow(x):
        import time
        time.sleep(0.02)
        return x

    d = sum_list([slow(1), square(2)])
    with pytest.raises(ValueError, match="profile="):
        tg.visualize(d, color="time")
    with tg.Profiler() as prof:
        d.compute(scheduler="sync")
    source = build_graph(d, color="time", profile=prof).source
    assert fill_of(source, "slow") != fill_of(source, "square")
    assert re.search(r'tooltip="slow-\w+: [\d.]+ ms"', source)
    assert "run time" in source  # legend explains the scale


def test_color_by_order_follows_a_profiled_run():
    a, b = square(1), square(2)
    d = sum_list([a, b])
    with tg.Profiler() as prof:
        d.compute(scheduler="sync")
    first = min(enumerate(prof.results), key=lambda ir: (ir[1].start, ir[0]))[1].key
    source = build_graph(d, color="order", profile=prof).source
    assert re.search(rf'tooltip="{first}: #1 run"', source)
    assert re.search(rf'tooltip="{d.key}: #3 run"', source)


def test_bad_color_is_an_error():
    with pytest.raises(ValueError, match="color"):
        tg.visualize(square(1), color="rainbow")


# ---------------------------------------------------------------- big graphs

def test_ten_thousand_tasks_are_summarised_with_a_message(tmp_path):
    d = sum_list([square(i) for i in range(10_000)])
    target = tmp_path / "big.svg"
    with pytest.warns(UserWarning, match="10001 tasks .* summary"):
        tg.visualize(d, filename=target)
    texts = svg_texts(target.read_text())
    assert "square ×10000" in texts and "sum_list ×1" in texts
    assert any("pass max_tasks=None" in t for t in texts)


def test_long_chain_summary_and_full_drawing_below_limit():
    d = tg.delayed(0, name="start")
    for _ in range(2000):
        d = d + 1
    with pytest.warns(UserWarning):
        source = build_graph(d).source
    assert "add ×2000" in source and "start ×1" in source
    assert re.search(r'g\d+ -> g\d+ \[label=1999\]', source)  # add feeds add 1999 times
    assert build_graph(d, max_tasks=None).source.count("label=add") == 2000


# ---------------------------------------------------------------- notebook repr

def test_repr_mimebundle_small_graph_is_inline_svg():
    d = sum_of_squares()
    bundle = d._repr_mimebundle_()
    assert "square" in svg_texts(bundle["image/svg+xml"])
    assert bundle["text/plain"].startswith(f"Delayed({d.key!r})")


def test_repr_mimebundle_include_exclude_and_large_graphs():
    d = sum_of_squares()
    assert set(repr_mimebundle(d, include={"text/plain"})) == {"text/plain"}
    assert set(repr_mimebundle(d, exclude={"text/plain"})) == {"image/svg+xml"}
    big = sum_list([square(i) for i in range(300)])
    bundle = big._repr_mimebundle_()
    assert set(bundle) == {"text/plain"} and ".visualize()" in bundle["text/plain"]


def test_repr_svg_for_svg_only_frontends():
    assert "square" in svg_texts(sum_of_squares()._repr_svg_())
    assert sum_list([square(i) for i in range(300)])._repr_svg_() is None


def test_ipython_formatter_uses_the_bundle():
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(sum_of_squares())
    assert "<svg" in data["image/svg+xml"]


# ---------------------------------------------------------------- missing graphviz

@pytest.fixture
def no_dot(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))


def test_missing_dot_says_how_to_install(no_dot, tmp_path):
    with pytest.raises(GraphvizNotFoundError, match="apt-get install graphviz") as info:
        sum_of_squares().visualize(filename=tmp_path / "g.png")
    assert isinstance(info.value.__cause__, graphviz.ExecutableNotFound)


def test_missing_dot_still_writes_source_and_repr_falls_back(no_dot, tmp_path):
    sum_of_squares().visualize(filename=tmp_path / "g.dot")
    assert os.path.getsize(tmp_path / "g.dot") > 0
    bundle = sum_of_squares()._repr_mimebundle_()
    assert set(bundle) == {"text/plain"} and "install graphviz" in bundle["text/plain"]
    assert Path(tmp_path / "g.dot").read_text().startswith("digraph")
