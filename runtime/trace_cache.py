"""A cache of traced programs: a rerun of a run loads each compiled function's program
(``jax.export``'s serialised StableHLO) instead of tracing the Python that builds it.

The persistent compilation cache (:mod:`ddm.runtime.compile_cache`) skips XLA on a rerun, but
not tracing — running ddm's lowering, JAX's batching of the solvers' loops, the conversion to
StableHLO — which took 2 s of examples/hedge_longonly.ddm's 2.4 s rerun. An entry here is the
exported program of one function for one input signature; loading it and handing it to XLA
(whose executable then comes from the compilation cache) takes ~40 ms.

A stale entry would compute the wrong thing without a word, so the key covers everything a
traced function can depend on (:func:`context`): ddm's own source files, the jax and jaxlib
versions and those of the other libraries traced (optax's update is in every train step),
Python's, every ``jax.config`` value (x64 among them), the backend and its devices,
``XLA_FLAGS``, the program (its source files and its graph), the run's settings, the contents
of its data, then
the function's name, its inputs' structure, shapes and dtypes, and the donated arguments. (It
is broader than it needs to be — a new seed or step count traces afresh — which costs a trace,
never a wrong answer.) An
entry is a file with a SHA-256 of its contents, written atomically; one that does not read
back whole is ignored and replaced. What is stored is data — a JSON header and the exported
bytes — never pickled objects; an output structure is rebuilt from dicts, lists, tuples and
named tuples of ddm, optax or jax (of modules the process has already imported: nothing is
imported on a file's say-so) only, and a function whose outputs hold anything else is not
cached (it is traced every time, as without the cache).

On when the compilation cache is (``ddmc`` without ``--no-cache``;
``compile_cache.enable()``), for a run on one device (docs/language.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from typing import Any

FORMAT = 1
_MAGIC = b"ddm-trace\n"
_MODULES = ("ddm.", "optax.", "jax.")  # where an output's named tuples may come from
_SOURCES = ("dsl", "compiler", "library", "runtime", "cli")


# Libraries whose code runs while a run's functions are traced (optax: the optimiser's update)
_TRACED = ("jax", "jaxlib", "optax", "jaxopt", "numpy", "ml_dtypes")


def _version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


class Unsupported(Exception):
    """An output structure this cache does not rebuild (then the function is not cached)."""


@functools.lru_cache(maxsize=1)
def ddm_digest() -> str:
    """SHA-256 of ddm's source files (a changed ddm traces afresh)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the package's
    h = hashlib.sha256()
    paths = [os.path.join(root, "__init__.py")]
    for sub in _SOURCES:
        for base, dirs, files in os.walk(os.path.join(root, sub)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            paths += [os.path.join(base, f) for f in sorted(files) if f.endswith((".py", ".lark"))]
    for path in paths:
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def graph_digest(graph) -> str:
    """SHA-256 of the IR's structure: every field of its frozen dataclasses, recursively (a
    class's own ``repr`` may leave fields out), arrays by their bytes."""
    h = hashlib.sha256()
    h.update(json.dumps(_plain(graph), default=str).encode())
    return h.hexdigest()


def _plain(x) -> Any:
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        fields = [[f.name, _plain(getattr(x, f.name))] for f in dataclasses.fields(x)]
        return [type(x).__qualname__, fields]
    if isinstance(x, (list, tuple)):
        return [type(x).__qualname__, [_plain(i) for i in x]]
    if isinstance(x, dict):
        return ["dict", [[_plain(k), _plain(v)] for k, v in x.items()]]
    if isinstance(x, (set, frozenset)):
        return ["set", sorted(json.dumps(_plain(i), default=str) for i in x)]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.ndarray | np.generic):
        a = np.asarray(x)
        return ["array", a.dtype.str, a.shape, hashlib.sha256(a.tobytes()).hexdigest()]
    return [type(x).__qualname__, repr(x)]


def context(program: dict, config: dict, data: str) -> str:
    """The part of every key that is the run's: the environment, the ``program`` (its source
    files, its graph — a variant rewrites the graph, not the text — and its precision), the
    run's ``config`` and its ``data`` digest (``ddm.runtime.data.base.dataset_digest``)."""
    import jax

    devices = [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    settings = {k: repr(v) for k, v in sorted(jax.config.values.items())}
    blob = json.dumps(
        {
            "format": FORMAT,
            "ddm": ddm_digest(),
            "packages": {name: _version(name) for name in _TRACED},
            "python": sys.version,
            "config": settings,
            "devices": devices,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "program": program,
            "run": config,
            "data": data,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class TraceCache:
    """Entries in ``folder`` under one run's ``context`` (:func:`context`)."""

    def __init__(self, folder: str, context: str):
        self.folder = folder
        self.context = context

    def key(self, name: str, args, donate: tuple[int, ...]) -> str:
        import jax

        leaves, tree = jax.tree_util.tree_flatten(args)
        avals = [
            (tuple(x.shape), str(x.dtype), bool(getattr(x, "weak_type", False))) for x in leaves
        ]
        blob = json.dumps([self.context, name, str(tree), avals, list(donate)])
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, key: str) -> str:
        return os.path.join(self.folder, f"{key}.trace")

    def load(self, key: str):
        """``(exported, output structure)`` of the entry, or None (absent, unreadable)."""
        import jax

        try:
            with open(self.path(key), "rb") as fh:
                raw = fh.read()
        except OSError:
            return None
        try:
            if not raw.startswith(_MAGIC):
                return None
            digest, rest = raw[len(_MAGIC) : len(_MAGIC) + 64], raw[len(_MAGIC) + 64 :]
            if hashlib.sha256(rest).hexdigest().encode() != digest:
                return None
            size = int.from_bytes(rest[:8], "little")
            header = json.loads(rest[8 : 8 + size].decode())
            if header.get("format") != FORMAT or header.get("key") != key:
                return None
            tree = jax.tree_util.tree_structure(_decode(header["outputs"]))
            return jax.export.deserialize(bytearray(rest[8 + size :])), tree
        except Exception:  # whatever does not read back — a moved class, a newer format — is a miss
            return None

    def store(self, key: str, blob: bytes, out_tree) -> bool:
        """Write the entry (``blob``: the serialised Exported); False when its outputs'
        structure cannot be stored, or the folder not written."""
        import jax

        from ddm.runtime.checkpoint import atomic_write

        try:
            skeleton = jax.tree_util.tree_unflatten(out_tree, list(range(out_tree.num_leaves)))
            outputs = _encode(skeleton)
            # an entry that could never be loaded is not written
            if jax.tree_util.tree_structure(_decode(json.loads(json.dumps(outputs)))) != out_tree:
                return False
        except Unsupported:
            return False
        head = json.dumps({"format": FORMAT, "key": key, "outputs": outputs}).encode()
        rest = len(head).to_bytes(8, "little") + head + bytes(blob)
        try:
            atomic_write(self.path(key), _MAGIC + hashlib.sha256(rest).hexdigest().encode() + rest)
        except OSError:
            return False  # a read-only cache: traced again next time
        return True


def _encode(node) -> Any:
    """A JSON form of an output skeleton (its leaves are their indices)."""
    if node is None:
        return {"t": "none"}
    if type(node) is int:
        return {"t": "leaf", "i": node}
    if type(node) is list or type(node) is tuple:
        return {"t": type(node).__name__, "c": [_encode(c) for c in node]}
    if type(node) is dict:
        keys = list(node)
        if not all(type(k) in (str, int) for k in keys):
            raise Unsupported("dict keys other than str and int")
        return {
            "t": "dict",
            "k": [[type(k).__name__, k] for k in keys],
            "c": [_encode(node[k]) for k in keys],
        }
    cls = type(node)
    if (
        isinstance(node, tuple)
        and hasattr(cls, "_fields")
        and cls.__module__.startswith(_MODULES)
        and "<" not in cls.__qualname__  # a class defined in a function cannot be found again
    ):
        where = f"{cls.__module__}:{cls.__qualname__}"
        return {"t": "namedtuple", "cls": where, "c": [_encode(c) for c in node]}
    raise Unsupported(f"{cls.__module__}.{cls.__qualname__}")


def _decode(obj) -> Any:
    kind = obj["t"]
    if kind == "none":
        return None
    if kind == "leaf":
        return int(obj["i"])
    if kind in ("list", "tuple"):
        items = [_decode(c) for c in obj["c"]]
        return items if kind == "list" else tuple(items)
    if kind == "dict":
        return {
            (int(k) if t == "int" else str(k)): _decode(c)
            for (t, k), c in zip(obj["k"], obj["c"], strict=True)
        }
    if kind == "namedtuple":
        module, qualname = obj["cls"].split(":")
        found = sys.modules.get(module)  # never imports: the classes of a run are loaded
        if not module.startswith(_MODULES) or found is None or "<" in qualname:
            raise Unsupported(obj["cls"])
        cls: Any = found
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")):
            raise Unsupported(obj["cls"])
        return cls(*(_decode(c) for c in obj["c"]))
    raise Unsupported(kind)
