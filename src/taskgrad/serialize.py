"""Save a graph to a file and load it back, without running code hidden in the file.

The file is a NumPy ``.npz`` archive (see ``docs/file_format.md``): a JSON
header describing every task, where functions are named by import path
(``"numpy:tanh"``), and one ``.npy`` member per array, read back with
``allow_pickle=False``.  Loading therefore only imports named modules and reads
numbers.  Lambdas, closures and other objects that have no import path are
pickled only when ``allow_pickle=True`` is passed to ``save``, and such a file
loads only with ``allow_pickle=True`` too.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
import math
import types
import zipfile
import zlib
from functools import partial

import numpy as np

from .autodiff.backward_tasks import TapeSpec
from .autodiff.rules import _RULES, has_rules, rule_for
from .checkpoint import Segment
from .delayed import DataclassOf, Delayed, DelayedFunction, delayeds_in, unpack_delayed
from .graph import (CycleError, Literal, MissingDependencyError, Pack, Ref, Task, materialize,
                    postorder)
from .placeholder import Placeholder, _check_shape

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "FileFormatError", "save", "load"]

FORMAT_NAME = "taskgrad-graph"
FORMAT_VERSION = 1
HEADER = "__taskgrad__"


class FileFormatError(ValueError):
    """The file is not a taskgrad graph, is damaged, or needs a newer taskgrad."""


# ---------------------------------------------------------------- import paths

def _resolve(path):
    """The object at ``"module:qualname"`` (imports the module; runs nothing else)."""
    module, _, qualname = path.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def import_path(obj):
    """``(path, unwrap)`` naming ``obj``, or None when it has no importable name.

    ``unwrap`` is true when the path names a ``@tg.delayed`` wrapper of ``obj``.
    """
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(module, str) or not isinstance(name, str) or module == "__main__":
        return None
    if "<" in name:  # <lambda>, <locals>
        return None
    path = f"{module}:{name}"
    try:
        found = _resolve(path)
    except Exception:  # noqa: BLE001 - any failure means "not importable"
        return None
    if found is obj:
        return path, False
    if isinstance(found, DelayedFunction) and found.__wrapped__ is obj:
        return path, True
    return None


# ---------------------------------------------------------------- encoding

class _Writer:
    """Turns task templates into JSON, collecting arrays and pickles as members."""

    def __init__(self, allow_pickle):
        self.allow_pickle = allow_pickle
        self.rules = None  # id(rule) -> (function, position), built when first needed
        self.members = {}
        self.by_id = {}  # id(array) -> member name, so a shared array is stored once
        self.context = ""

    def member(self, prefix, obj, data):
        name = self.by_id.get(id(obj))
        if name is None:
            name = f"{prefix}{len(self.members)}"
            self.members[name] = data
            self.by_id[id(obj)] = name
        return name

    def pickle(self, obj, why):
        if not self.allow_pickle:
            raise ValueError(
                f"{self.context}: {why}; it can only be saved by pickling, which runs code "
                "when loaded: pass allow_pickle=True to tg.save (and to tg.load)")
        import cloudpickle

        data = np.frombuffer(cloudpickle.dumps(obj), dtype=np.uint8)
        return {"$pickle": self.member("p", obj, data)}

    def function(self, func):
        if isinstance(func, partial):
            return {"$partial": [self.function(func.func), self.value(func.args),
                                 self.value(func.keywords)]}
        found = import_path(func)
        if found is not None:
            path, unwrap = found
            return {"$wrapped": path} if unwrap else {"$import": path}
        special = self.special(func)
        if special is not None:
            return special
        return self.pickle(func, f"function {func!r} has no import path "
                                 "(a lambda, closure, local or __main__ function)")

    def special(self, obj):
        """taskgrad's own callables: VJP rules, checkpointed blocks, their methods."""
        if self.rules is None:
            self.rules = _rule_index()
        rule = self.rules.get(id(obj)) or _made_rule(obj)
        if rule is not None:
            return {"$rule": [self.function(rule[0]), rule[1]]}
        if type(obj) is Segment:
            return {"$segment": [self.function(obj.fn), self.value(obj.template),
                                 self.value(obj.keys)]}
        if isinstance(obj, types.MethodType) and type(obj.__self__) is Segment:
            return {"$method": [self.special(obj.__self__), obj.__func__.__name__]}
        return None

    def value(self, v):  # noqa: C901 - one branch per supported type
        cls = type(v)
        if v is None or cls is bool or cls is str or cls is int:
            return v
        if cls is float:
            return v if math.isfinite(v) else {"$float": repr(v)}
        if cls is Ref:
            return {"$ref": self.value(v.key)}
        if cls is Pack:
            kind = v.kind
            items = [[self.value(k), self.value(x)] for k, x in v.items] if kind is dict \
                else [self.value(x) for x in v.items]
            if type(kind) is DataclassOf:
                kind = {"$dataclass": [self.function(kind.cls), list(kind.names)]}
                return {"$pack": [kind, items]}
            return {"$pack": [_KIND_NAMES.get(kind) or self.function(kind), items]}
        if cls in _KIND_NAMES:
            if cls is dict:
                return {"$dict": [[self.value(k), self.value(x)] for k, x in v.items()]}
            return {"$" + _KIND_NAMES[cls]: [self.value(x) for x in v]}
        if isinstance(v, tuple) and hasattr(v, "_fields"):
            return {"$namedtuple": [self.function(cls), [self.value(x) for x in v]]}
        if dataclasses.is_dataclass(v) and not isinstance(v, type) and _remade_by_init(cls):
            fields = [[f.name, self.value(getattr(v, f.name))] for f in dataclasses.fields(v)]
            return {"$dataclass": [self.function(cls), fields]}
        if cls is complex:
            return {"$complex": [self.value(v.real), self.value(v.imag)]}
        if cls is bytes:
            return {"$bytes": base64.b64encode(v).decode("ascii")}
        if cls is slice:
            return {"$slice": [self.value(v.start), self.value(v.stop), self.value(v.step)]}
        if v is Ellipsis:
            return {"$ellipsis": None}
        if isinstance(v, np.dtype):
            return {"$dtype": self.value(np.lib.format.dtype_to_descr(v))}
        if (cls is np.ndarray or isinstance(v, np.generic)) and v.dtype != object:
            # (a subclass, masked array or matrix, would lose what it adds: pickled or refused)
            tag = "$array" if cls is np.ndarray else "$npscalar"
            return {tag: self.member("a", v, np.asarray(v))}
        if type(v) is TapeSpec:
            return {"$tapespec": [self.value(v.fkey), self.value(v.name), self.value(v.paths)]}
        if isinstance(v, (type, partial)) or (callable(v) and (
                import_path(v) is not None or self.special(v) is not None)):
            return self.function(v)
        return self.pickle(v, f"value of type {cls.__name__} is not a plain value or array")


def _remade_by_init(cls):
    """Whether ``cls(**fields)`` gives back an equal instance: every field goes through
    ``__init__`` and nothing runs after it (else such a value is pickled)."""
    return all(f.init for f in dataclasses.fields(cls)) and not hasattr(cls, "__post_init__")


def _rule_index():
    """id(rule) -> (function, position) for the registered rules of importable functions."""
    index = {}
    for func, rules in list(_RULES.items()):
        if type(rules) is tuple and import_path(func) is not None:
            for pos, rule in enumerate(rules):
                if rule is not None:
                    index.setdefault(id(rule), (func, pos))
    return index


def _made_rule(rule, max_pos=64):
    """``(function, position)`` when ``rule`` is what ``rule_for`` makes for a variadic
    function (``defvjp_argnum``): same code, same captured values."""
    code = getattr(rule, "__code__", None)
    if code is None:
        return None
    cells = [c.cell_contents for c in rule.__closure__ or ()]
    for func, maker in list(_RULES.items()):
        if type(maker) is tuple or import_path(func) is None:
            continue
        for pos in range(max_pos):
            made = maker(pos)
            if getattr(made, "__code__", None) is not code:
                continue
            made_cells = [c.cell_contents for c in made.__closure__ or ()]
            if len(made_cells) == len(cells) and all(
                    type(a) is type(b) and a == b for a, b in zip(made_cells, cells)):
                return func, pos
    return None


_KIND_NAMES = {list: "list", tuple: "tuple", dict: "dict", set: "set", frozenset: "frozenset"}
_KINDS = {name: kind for kind, name in _KIND_NAMES.items()}


def _encode_task(writer, task):
    writer.context = f"task {task.key!r}"
    entry = {"key": writer.value(task.key), "role": task.role}
    if type(task) is Literal:
        entry.update(type="literal", value=writer.value(task.value))
    elif type(task) is Placeholder:
        entry.update(type="placeholder",
                     shape=None if task.shape is None else list(task.shape),
                     dtype=None if task.dtype is None else writer.value(task.dtype))
    elif type(task) is Task:
        entry.update(type="task", func=writer.function(task.func),
                     args=[writer.value(a) for a in task.args],
                     kwargs=None if not task.kwargs else writer.value(task.kwargs),
                     pure=task.pure)
    else:
        raise TypeError(f"task {task.key!r}: cannot save a {type(task).__name__}")
    return entry


# ---------------------------------------------------------------- save

def save(obj, path, *, allow_pickle=False):
    """Write a compiled graph or Delayed outputs (nested in lists/tuples/dicts) to ``path``.

    The graph saved is the graph as written (before optimization); a compiled
    graph keeps its ``optimize`` choice and scheduler name.  ``path`` is used
    as given (NumPy's ``.npz`` suffix is not added).
    """
    from .static import Compiled

    if isinstance(obj, Compiled):
        graph, keys, template = obj.source_graph, obj._keys, obj._template
        scheduler = obj.scheduler if obj.scheduler is None or isinstance(obj.scheduler, str) \
            else None
        meta = {"kind": "compiled", "optimize": _options(obj.optimize), "scheduler": scheduler,
                "num_workers": obj._run.num_workers}
    else:
        template, found = unpack_delayed(obj)
        if not found:
            raise TypeError(f"tg.save needs a compiled graph or Delayed outputs, got {obj!r}")
        keys = list(found)
        graph = {k: t for d in found.values() for k, t in d.graph.items()}
        meta = {"kind": "delayed",  # the nout= of outputs, so that they unpack again
                "lengths": [[k, d._length] for k, d in found.items() if d._length is not None]}
    writer = _Writer(allow_pickle)
    order = postorder(graph, keys)
    tasks = [_encode_task(writer, graph[key]) for key in order]
    writer.context = "the outputs"
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **meta,
              "outputs": writer.value(template),
              "pickled": any(name.startswith("p") for name in writer.members),
              "tasks": tasks}
    text = json.dumps(header, allow_nan=False).encode("utf-8")
    members = {HEADER: np.frombuffer(text, dtype=np.uint8), **writer.members}
    with open(path, "wb") as f:
        np.savez(f, **members)


def _options(optimize):
    if isinstance(optimize, bool) or optimize is None:
        return optimize
    if isinstance(optimize, str):
        return [optimize]
    if isinstance(optimize, dict):
        return {str(k): bool(v) for k, v in optimize.items()}
    return sorted(optimize)


# ---------------------------------------------------------------- load

class _Reader:
    """Rebuilds values from the JSON header, checking everything it reads."""

    def __init__(self, archive, allow_pickle, path):
        self.archive = archive
        self.allow_pickle = allow_pickle
        self.path = path
        self.context = "the header"

    def fail(self, message):
        raise FileFormatError(f"{self.path}: {self.context}: {message}")

    def member(self, name):
        if not isinstance(name, str) or name not in self.archive.files:
            self.fail(f"refers to a missing array member {name!r}")
        return self.archive[name]

    def function(self, enc):
        if not isinstance(enc, dict) or len(enc) != 1:
            self.fail(f"bad function entry {enc!r}")
        (tag, body), = enc.items()
        if tag in ("$import", "$wrapped"):
            if not isinstance(body, str) or ":" not in body:
                self.fail(f"bad import path {body!r}")
            try:
                func = _resolve(body)
            except Exception as exc:  # noqa: BLE001
                self.fail(f"cannot import {body!r} ({type(exc).__name__}: {exc})")
            if tag == "$wrapped":
                func = getattr(func, "__wrapped__", func)
            if not callable(func):
                self.fail(f"{body!r} is not callable")
            return func
        if tag == "$partial":
            if not isinstance(body, list) or len(body) != 3:
                self.fail(f"bad partial entry {body!r}")
            return partial(self.function(body[0]), *self.value(body[1]), **self.value(body[2]))
        if tag == "$pickle":
            return self.unpickle(body)
        if tag == "$rule":
            func, pos = self.function(body[0]), body[1]
            if not has_rules(func) or not isinstance(pos, int):
                self.fail(f"no VJP rule {pos!r} is registered for {func!r}")
            return rule_for(func, pos)
        if tag == "$segment":
            template, keys = self.value(body[1]), self.value(body[2])
            if not isinstance(keys, tuple):
                self.fail("bad checkpointed block")
            return Segment(self.function(body[0]), template, keys)
        if tag == "$method":
            owner, name = self.function(body[0]), body[1]
            if type(owner) is not Segment or name not in ("vjp_rule", "backward", "apply"):
                self.fail(f"bad method entry {body!r}")
            return getattr(owner, name)
        self.fail(f"bad function entry {enc!r}")

    def namedtuple(self, enc):
        """A namedtuple class: with dataclasses, the only things a file may make us call
        while loading."""
        cls = self.function(enc)
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
            self.fail(f"{enc!r} is not a namedtuple class")
        return cls

    def dataclass(self, enc):
        cls = self.function(enc)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            self.fail(f"{enc!r} is not a dataclass")
        return cls

    def container_kind(self, enc):
        """The kind of a ``$pack``: a container's name, a namedtuple class or a dataclass."""
        if isinstance(enc, str):
            kind = _KINDS.get(enc)
            if kind is None:
                self.fail(f"bad container kind {enc!r}")
            return kind
        if isinstance(enc, dict) and "$dataclass" in enc:
            cls_enc, names = enc["$dataclass"]
            return DataclassOf(self.dataclass(cls_enc), tuple(names))
        return self.namedtuple(enc)

    def unpickle(self, name):
        if not self.allow_pickle:
            self.fail("holds a pickled object; unpickling runs code from the file, so it "
                      "needs tg.load(path, allow_pickle=True): use it only for files you trust")
        import pickle

        return pickle.loads(self.member(name).tobytes())

    def value(self, enc):  # noqa: C901 - one branch per tag
        if enc is None or isinstance(enc, (bool, str, int, float)):
            return enc
        if not isinstance(enc, dict) or len(enc) != 1:
            self.fail(f"bad value {str(enc)[:80]!r}")
        (tag, body), = enc.items()
        if tag == "$ref":
            return Ref(self.value(body))
        if tag == "$pack":
            kind = self.container_kind(body[0])
            if kind is dict:
                return Pack(dict, tuple((self.value(k), self.value(x)) for k, x in body[1]))
            return Pack(kind, tuple(self.value(x) for x in body[1]))
        if tag[1:] in _KINDS:
            kind = _KINDS[tag[1:]]
            if kind is dict:
                return {self.value(k): self.value(x) for k, x in body}
            return kind(self.value(x) for x in body)
        if tag == "$namedtuple":
            return self.namedtuple(body[0])(*(self.value(x) for x in body[1]))
        if tag == "$dataclass":
            return self.dataclass(body[0])(**{name: self.value(x) for name, x in body[1]})
        if tag == "$float":
            if body not in ("nan", "inf", "-inf"):
                self.fail(f"bad float {body!r}")
            return float(body)
        if tag == "$complex":
            return complex(self.value(body[0]), self.value(body[1]))
        if tag == "$bytes":
            return base64.b64decode(body)
        if tag == "$slice":
            return slice(*(self.value(x) for x in body))
        if tag == "$ellipsis":
            return Ellipsis
        if tag == "$dtype":
            return np.lib.format.descr_to_dtype(self.value(body))
        if tag == "$array":
            return self.member(body)
        if tag == "$npscalar":
            return self.member(body)[()]
        if tag == "$pickle":
            return self.unpickle(body)
        if tag in ("$import", "$wrapped", "$partial", "$rule", "$segment", "$method"):
            return self.function(enc)
        if tag == "$tapespec":
            fkey, name, paths = (self.value(x) for x in body)
            return TapeSpec(fkey, name, paths)
        self.fail(f"unknown value tag {tag!r}")


def _open(path):
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # (NumPy's ValueError for a file that is no archive advises unpickling it: not here)
        detail = "" if isinstance(exc, ValueError) else f" ({exc})"
        raise FileFormatError(f"{path}: not a taskgrad graph file, or a corrupted or "
                              f"truncated one{detail}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile) or HEADER not in archive.files:
        raise FileFormatError(f"{path}: not a taskgrad graph file (no {HEADER!r} header)")
    return archive


def _header(archive, path):
    try:
        header = json.loads(archive[HEADER].tobytes().decode("utf-8"))
    except (ValueError, OSError, EOFError, NotImplementedError, zlib.error,
            zipfile.BadZipFile) as exc:
        raise FileFormatError(f"{path}: corrupted taskgrad graph file ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise FileFormatError(f"{path}: not a taskgrad graph file")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FileFormatError(f"{path}: corrupted taskgrad graph file (version {version!r})")
    if version > FORMAT_VERSION:
        raise FileFormatError(
            f"{path}: written in taskgrad graph format version {version}, newer than this "
            f"taskgrad reads (up to {FORMAT_VERSION}); upgrade taskgrad to load it")
    if not isinstance(header.get("tasks"), list) or header.get("kind") not in ("compiled",
                                                                                "delayed"):
        raise FileFormatError(f"{path}: corrupted taskgrad graph file (bad header)")
    return header


def _decode_task(reader, entry):
    if not isinstance(entry, dict):
        reader.fail(f"bad task entry {str(entry)[:80]!r}")
    key = reader.value(entry.get("key"))
    reader.context = f"task {key!r}"
    kind, role = entry.get("type"), entry.get("role", "forward")
    if kind == "literal":
        task = Literal(key, reader.value(entry.get("value")))
        task.role = role
        return task
    if kind == "placeholder":
        shape, dtype = entry.get("shape"), entry.get("dtype")
        return Placeholder(key, _check_shape(key, shape),
                           None if dtype is None else reader.value(dtype))
    if kind == "task":
        func = reader.function(entry.get("func"))
        args = entry.get("args")
        if not isinstance(args, list):
            reader.fail("bad arguments")
        kwargs = reader.value(entry.get("kwargs"))
        if kwargs is not None and not isinstance(kwargs, dict):
            reader.fail("bad keyword arguments")
        return Task(key, func, tuple(reader.value(a) for a in args), kwargs,
                    pure=bool(entry.get("pure")), role=role)
    reader.fail(f"unknown task type {kind!r}")


def load(path, *, allow_pickle=False, scheduler=None):
    """Read a file written by :func:`save`: a compiled graph or the Delayed outputs.

    Functions are imported by the paths the file names; nothing is unpickled
    unless ``allow_pickle=True``.  ``scheduler`` overrides a compiled graph's.
    Raises :class:`FileFormatError` for a damaged, foreign or newer file.
    """
    with _open(path) as archive:
        header = _header(archive, path)
        if header.get("pickled") and not allow_pickle:
            raise FileFormatError(
                f"{path}: the file holds pickled functions or values; unpickling runs code "
                "from the file, so it needs tg.load(path, allow_pickle=True): use it only "
                "for files you trust")
        reader = _Reader(archive, allow_pickle, path)
        try:
            graph = {}
            for entry in header["tasks"]:
                task = _decode_task(reader, entry)
                graph[task.key] = task
            reader.context = "the outputs"
            template = reader.value(header.get("outputs"))
        except (TypeError, KeyError, IndexError, AttributeError, ValueError, EOFError,
                NotImplementedError, zlib.error, zipfile.BadZipFile) as exc:
            # (ValueError: bad base64 or an array member of an unreadable kind; EOFError,
            # NotImplementedError and zlib.error: a damaged zip member)
            reader.fail(f"corrupted entry ({type(exc).__name__}: {exc})")
    try:
        order = postorder(graph, list(graph))
    except (CycleError, MissingDependencyError) as exc:
        raise FileFormatError(f"{path}: corrupted taskgrad graph file ({exc})") from None
    delayeds = delayeds_in(graph, order)
    try:
        for key, length in header.get("lengths", ()):
            if type(length) is not int or length < 0:
                raise ValueError(f"bad length {length!r}")
            d = delayeds[key]
            delayeds[key] = Delayed(key, d._task, d._dependencies, length)
        outputs = materialize(template, delayeds)
    except KeyError as exc:
        raise FileFormatError(f"{path}: an output refers to a missing task {exc}") from None
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: corrupted output lengths ({exc})") from None
    if header["kind"] == "delayed":
        return outputs
    from .static import compile

    try:
        return compile(outputs, optimize=_without_fold(header.get("optimize", True)),
                       scheduler=scheduler or header.get("scheduler"),
                       num_workers=header.get("num_workers"))
    except (ValueError, TypeError) as exc:  # the header's optimize, scheduler or num_workers
        if scheduler is not None:
            raise
        raise FileFormatError(f"{path}: corrupted taskgrad graph file ({exc})") from exc


def _without_fold(optimize):
    """The saved pass selection without ``fold``: folding runs the graph's constant parts,
    and loading a file runs nothing (they run at each call instead)."""
    if optimize is True:
        return {"fold": False}
    if isinstance(optimize, dict):
        return {**optimize, "fold": False}
    if isinstance(optimize, list):
        return [name for name in optimize if name != "fold"]
    return optimize
