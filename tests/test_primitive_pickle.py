"""A ``tg.primitive`` keeps its rules in every process it is pickled to: by name from an
importable module (whose import there registers them), by value, with them, from the main
script; and it stays what a function is (metadata, a method in a class body, pickle)."""

import copy
import functools
import inspect
import os
import pickle
import subprocess
import sys
import textwrap
import weakref

import cloudpickle
import numpy as np
import pytest

import taskgrad as tg
import taskgrad.numpy as tnp
from taskgrad.autodiff import primitive_pickle, rules


@tg.primitive
def cube(x):
    """``x`` cubed."""
    return x ** 3


tg.defvjp(cube, lambda ans, x: lambda g: g * 3 * x ** 2)


class Layer:
    @tg.primitive
    def doubled(self, x):  # a plain function in a class body: a method
        return 2.0 * x

    @staticmethod
    @tg.primitive
    def squared(x):
        return x ** 2


tg.defvjp(Layer.doubled, None, lambda ans, self, x: lambda g: 2.0 * g)
tg.defvjp(Layer.squared, lambda ans, x: lambda g: 2.0 * g * x)


@tg.delayed
def loss(x):
    return np.sum(cube(x)) + np.sum(Layer().doubled(x)) + np.sum(Layer.squared(x))


def gradient(func, x, scheduler="sync"):
    return tg.grad(tg.delayed(func)(x), x).compute(scheduler=scheduler)


def test_an_importable_primitive_keeps_its_rules_on_processes():
    """Module-level and class-attribute primitives: the worker imports them by name."""
    x = tg.delayed(np.array([1.0, 2.0]))
    g = tg.grad(loss(x), x)
    expected = [3.0 + 2.0 + 2.0, 12.0 + 2.0 + 4.0]  # 3 x**2 + 2 + 2 x
    np.testing.assert_array_equal(g.compute(scheduler="processes", num_workers=1), expected)
    np.testing.assert_array_equal(g.compute(scheduler="sync"), expected)


@pytest.mark.parametrize("prim", [cube, Layer.doubled, Layer.squared],
                         ids=["module", "method", "staticmethod"])
def test_pickle_gives_back_the_primitive_its_module_holds(prim):
    assert pickle.loads(pickle.dumps(prim)) is prim
    assert cloudpickle.loads(cloudpickle.dumps(prim)) is prim
    assert copy.deepcopy(prim) is prim


def test_a_primitive_keeps_its_function_metadata_and_repr():
    assert (cube.__name__, cube.__qualname__, cube.__doc__) == ("cube", "cube", "``x`` cubed.")
    assert str(inspect.signature(cube)) == "(x)"
    assert repr(cube) == "<taskgrad primitive cube>"
    doubler = tg.primitive(functools.partial(np.multiply, 2.0))  # no __name__ to copy
    assert "functools.partial" in repr(doubler)
    assert doubler(3.0) == 6.0


def _unregister(func):
    rules.restore_registration(func, (None, None, None, False))


def test_a_copy_sent_by_value_carries_the_registration(monkeypatch):
    """What a process that has no original (a worker) does with a primitive sent by value:
    one copy per primitive, registered with what each pickle says."""
    @tg.primitive
    def local_cube(x):  # (a local function: no name to pickle it by)
        return x ** 3

    tg.defvjp(local_cube, lambda ans, x: lambda g: g * 3 * x ** 2)
    rules.uses_only_shapes(local_cube, ans=True)
    sent = cloudpickle.dumps(local_cube)
    assert cloudpickle.loads(sent) is local_cube  # in its own process, the original
    monkeypatch.setattr(primitive_pickle, "_BY_TOKEN", weakref.WeakValueDictionary())
    got = cloudpickle.loads(sent)
    x = tg.delayed(np.array([1.0, 2.0]))
    try:
        assert got is not local_cube and got.__name__ == "local_cube"
        assert rules.shape_only_inputs(got) == (frozenset(), True)
        np.testing.assert_array_equal(gradient(lambda v: np.sum(got(v)), x), [3.0, 12.0])
        # a rule registered after the first sending arrives with the next one, on the same copy
        tg.defvjp(local_cube, lambda ans, x: lambda g: g * 4.0)  # (deliberately off)
        assert cloudpickle.loads(cloudpickle.dumps(local_cube)) is got
        np.testing.assert_array_equal(gradient(lambda v: np.sum(got(v)), x), [4.0, 4.0])
        assert rules.shape_only_inputs(got) == (frozenset(), False)
    finally:
        _unregister(got)
        _unregister(local_cube)


def test_a_module_cloudpickle_sends_by_value_sends_its_primitives_by_value(monkeypatch):
    """Its workers need not import it (a dask.distributed cluster, say)."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        sent = cloudpickle.dumps(cube)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    monkeypatch.setattr(primitive_pickle, "_BY_TOKEN", weakref.WeakValueDictionary())
    got = cloudpickle.loads(sent)
    try:
        assert got is not cube
        np.testing.assert_array_equal(got(np.array([2.0])), [8.0])
        assert rules.has_rules(got)
    finally:
        _unregister(got)


def test_second_derivative_through_a_primitive():
    x = tg.delayed(np.array([1.0, 2.0]))
    g = tg.grad(tg.delayed(lambda v: np.sum(cube(v)))(x), x)  # 3 x**2
    np.testing.assert_array_equal(tg.grad(tnp.sum(g), x).compute(scheduler="sync"), [6.0, 12.0])


def test_a_primitive_defined_in_the_main_script_keeps_its_rules_on_processes(tmp_path):
    """The worker gets the script's functions by value (its own import of the script runs as
    ``__mp_main__``): the copy of each primitive must come with its rules."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import numpy as np
        import taskgrad as tg

        @tg.primitive
        def cube(x):
            return x ** 3

        class Layer:
            @tg.primitive
            def doubled(self, x):
                return 2.0 * x

            squared = staticmethod(tg.primitive(lambda x: x ** 2))

        @tg.delayed
        def f(x):
            return np.sum(cube(x)) + np.sum(Layer().doubled(x)) + np.sum(Layer.squared(x))

        if __name__ == "__main__":
            import pickle
            assert pickle.loads(pickle.dumps(cube)) is cube  # (pickle: by name, as a function)
            tg.defvjp(cube, lambda ans, x: lambda g: g * 3 * x ** 2)
            tg.defvjp(Layer.doubled, None, lambda ans, self, x: lambda g: 2.0 * g)
            tg.defvjp(Layer.squared, lambda ans, x: lambda g: 2.0 * g * x)
            x = tg.delayed(np.array([1.0, 2.0]))
            g = tg.grad(f(x), x)
            print(g.compute(scheduler="sync").tolist(),
                  g.compute(scheduler="processes", num_workers=1).tolist())
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[7.0, 18.0] [7.0, 18.0]"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_names_its_own_primitives_apart_from_its_parents():
    """A primitive made in a forked child and sent to the parent is the child's, not the
    parent's primitive made at the same count after the fork."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            child = tg.primitive(lambda v: "child's")
            os.write(write, cloudpickle.dumps(child))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    parent = tg.primitive(lambda v: "parent's")
    received = cloudpickle.loads(os.read(read, 1 << 20))
    assert received is not parent
    assert received(1) == "child's"
