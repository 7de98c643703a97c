"""Run configuration: the program's ``run { }`` section, then a YAML file, then ``--set``.

Every value remembers where it was written, so a bad one is reported at its own line and
column — in the ``.ddm`` file, in the YAML file, or in the ``--set`` argument. Every numeric
setting has a range (``runtime/ranges.py``) checked when it is read; YAML is read with a
bounded loader (depth, alias expansion); messages quote at most a short excerpt of a value.

>>> cfg = RunConfig.defaults()
>>> cfg.values["steps"], cfg.values["optimizer"]["name"]
(1000, 'adam')
"""

from __future__ import annotations

import datetime
import difflib
import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ddm.compiler.settings import Call, Invalid, RunSettings
from ddm.dsl.diagnostics import DdmError, excerpt
from ddm.dsl.parser import MAX_INT, decode_source
from ddm.dsl.span import Span
from ddm.library.op import Arg
from ddm.runtime.errors import ConfigDiagnostic
from ddm.runtime.ranges import (
    ANY,
    COUNT,
    DECAY,
    EVERY,
    FLOAT32_MAX,
    INT32_MAX,
    NONNEGATIVE,
    POSITIVE,
    SEED,
    Range,
)

# The learning-rate schedule every optimiser takes (runtime/optimizers.py): lr is the peak,
# reached after `warmup` linear steps from 0, then held (constant) or decayed over the
# remaining steps to final_lr·lr (cosine, linear, exponential).
SCHEDULE = (
    Arg("schedule", "str", "constant", choices=("constant", "cosine", "linear", "exponential")),
    Arg("warmup", "int", 0),
    Arg("final_lr", "float", 0.0),
    # > 0: the learning rate is trained with the model (runtime/optimizers.py)
    Arg("hypergradient", "float", 0.0),
)

OPTIMIZERS = {
    "adam": (Arg("lr", "float", 1e-3), Arg("b1", "float", 0.9), Arg("b2", "float", 0.999))
    + SCHEDULE,
    "adamw": (
        Arg("lr", "float", 1e-3),
        Arg("weight_decay", "float", 1e-4),
        Arg("b1", "float", 0.9),
        Arg("b2", "float", 0.999),
    )
    + SCHEDULE,
    "sgd": (Arg("lr", "float", 1e-2), Arg("momentum", "float", 0.0)) + SCHEDULE,
    "rmsprop": (Arg("lr", "float", 1e-3), Arg("decay", "float", 0.9)) + SCHEDULE,
}

# The range of each optimiser keyword (the same name means the same thing in every optimiser)
OPTIMIZER_RANGES = {
    "lr": POSITIVE,
    "b1": DECAY,
    "b2": DECAY,
    "weight_decay": NONNEGATIVE,
    "momentum": DECAY,
    "decay": DECAY,
    "warmup": Range(0, INT32_MAX, why="the steps of linear warm-up"),
    "final_lr": Range(0, why="the final learning rate as a fraction of lr"),
    "hypergradient": Range(
        0, why="the step size of the learned log learning rate; 0 keeps lr fixed"
    ),
}

# key: (kind, default, range of a number)
SCALARS = {
    "steps": ("int", 1000, COUNT),
    "batch": ("int", 256, COUNT),
    "seed": ("int", 0, SEED),
    "x64": ("bool", False, None),
    "eval_every": ("int", 0, EVERY),
    "log_every": ("int", 50, COUNT),
    "clip_norm": ("float", 0.0, Range(0, why="0 turns clipping off")),
    "checkpoint_every": ("int", 0, EVERY),
    "loss": ("str", "", None),  # a named loss (``loss NAME = …``) to train instead
    "diagnostics": ("str", "basic", None),  # gradient statistics on log steps (diagnostics.py)
    "rules": ("str", "on", None),  # off: train without the Φ-rules' loss terms ("pure DP")
    "compare_rules": ("bool", False, None),  # --run trains rules off and on, same seed
    # data-parallel training: the batch split over this many devices, or all (devices.py)
    "devices": ("devices", 1, COUNT),
}
# Jacobian saliency of a decision w.r.t. an input's features, on the test set (saliency.py)
SALIENCY = {
    "jacobian": (
        Arg("of", "str"),
        Arg("wrt", "str"),
        Arg("top", "int", 10),
        Arg("reference", "ints", ()),
        Arg("samples", "int", 512),
    )
}
# The orthogonality penalty between the task's and the rules' gradients at a decision (seed
# §7.5): weight · cos²(∂L_task/∂d, ∂L_rules/∂d), or the seed's raw ⟨·,·⟩² with cosine=false
ORTHOGONALITY = {
    "penalty": (Arg("wrt", "str"), Arg("weight", "float", 0.01), Arg("cosine", "bool", True))
}
# Episodes sampled with probability ∝ the weight of the rules that fire on them (seed §7.2)
CURRICULUM = {"rules": (Arg("strength", "float", 0.5), Arg("every", "int", 100))}
# The first step at which a test metric reaches a value (steps to a target Sharpe)
TARGET = {"reach": (Arg("metric", "str"), Arg("value", "float"), Arg("below", "bool", False))}
CALL_KINDS = {
    "saliency": (SALIENCY, 'saliency = jacobian(of="w", wrt="x", top=10, reference=[0, 3])'),
    "orthogonality": (ORTHOGONALITY, 'orthogonality = penalty(wrt="w", weight=0.01)'),
    "curriculum": (CURRICULUM, "curriculum = rules(strength=0.5, every=100)"),
    "target": (TARGET, 'target = reach(metric="sharpe", value=1.0)'),
}
# The range of each numeric keyword of those calls, by call
CALL_RANGES = {
    "optimizer": OPTIMIZER_RANGES,
    "saliency": {"top": COUNT, "samples": COUNT},
    "orthogonality": {"weight": NONNEGATIVE},
    "curriculum": {
        "strength": Range(0, 1, why="the share of rule-weighted sampling"),
        "every": COUNT,
    },
    "target": {"value": ANY},
}
CALLS = ("data", "optimizer") + tuple(CALL_KINDS)
KEYS = tuple(SCALARS) + CALLS

_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
MAX_STRING = 256  # characters of a string setting (names, dates, kinds)
# A YAML config (or --set value) is a few keys deep; these bound what a hostile one can cost
# before anything is built from it: nesting (PyYAML composes recursively) and the number of
# values once every alias is expanded (the "billion laughs" shape is a few lines long).
MAX_CONFIG_BYTES = 2 * 1024 * 1024
MAX_YAML_DEPTH = 32
MAX_YAML_VALUES = 10_000


@dataclass
class RunConfig:
    values: dict[str, Any]
    where: dict[str, Span] = field(default_factory=dict)  # "steps", "optimizer.lr" → span
    texts: dict[str, str] = field(default_factory=dict)  # file → text, for carets

    @classmethod
    def defaults(cls) -> "RunConfig":
        values: dict[str, Any] = {k: d for k, (_, d, _) in SCALARS.items()}
        values["optimizer"] = {"name": "adam", "lr": 1e-3}
        values["data"] = None
        for key in CALL_KINDS:
            values[key] = None
        return cls(values)

    def span(self, key: str) -> Span | None:
        while key:
            if key in self.where:
                return self.where[key]
            key = key.rpartition(".")[0]
        return None

    def error(self, key: str, message: str, hint: str | None = None) -> ConfigDiagnostic:
        err = ConfigDiagnostic(self.span(key), message, hint=hint)
        span = err.span
        if span is not None:
            err.source = self.texts.get(span.file)
        return err

    # --- sources -------------------------------------------------------------------------------
    def apply_run_section(self, run: RunSettings | None, text: str) -> None:
        """The program's ``run { }`` section (typed by the compiler, spans kept)."""
        if run is None:
            return
        self.texts[run.span.file] = text
        for entry in run.entries:
            try:
                value = _plain(entry.value)
            except ConfigDiagnostic as err:
                raise err.with_source(text) from None
            self._set(entry.key, value, entry.span, entry.value_span)
            if isinstance(entry.value, Call):
                for kw in entry.value.kwargs:  # 'key=value': unknown keys and bad values alike
                    self.where[f"{entry.key}.{kw.name}"] = kw.span

    def apply_yaml(self, path: str) -> None:
        text = _read_config(path)
        self.texts[path] = text
        node, data = load_yaml(text, path)
        if node is None or data is None:
            return
        if not isinstance(data, dict):
            err = ConfigDiagnostic(
                _mark_span(path, node), "a run config is a mapping of keys such as steps: 100"
            )
            raise err.with_source(text)
        for key_node, value_node in node.value:  # merge keys (<<) are flattened by now
            key = _key_of(key_node, path, text)
            value = data[key]
            span = _mark_span(path, key_node)
            if isinstance(value, dict):
                value = dict(value)
                for k_node, v_node in value_node.value:
                    k = _key_of(k_node, path, text)
                    self.where[f"{key}.{k}"] = _mark_span(path, v_node)
                    # an unknown setting is reported at its name, not its value
                    self.where[f"{key}.{k}:name"] = _mark_span(path, k_node)
            self._set(key, value, span, _mark_span(path, value_node))

    def apply_set(self, assignment: str, index: int) -> None:
        """``--set key=value`` or ``--set optimizer.lr=3e-4``; the value is parsed as YAML."""
        name = f"<--set {index}>"
        self.texts[name] = assignment
        key, eq, raw = assignment.partition("=")
        if not eq or not key.strip():
            err = ConfigDiagnostic(
                Span(name, 1, 1, 1, len(assignment) + 1),
                f"--set takes KEY=VALUE, got {excerpt(assignment)}",
            )
            err.source = assignment
            raise err
        key = key.strip()
        vspan = Span(name, 1, len(key) + 2, 1, len(assignment) + 1)
        try:
            value = load_yaml(raw, name)[1] if raw.strip() else None
        except ConfigDiagnostic as err:
            if not isinstance(err, _Unbounded):
                value = raw  # not YAML: the text itself (a name, a date)
            else:  # too deep or too large: refused as a YAML file would be
                raise ConfigDiagnostic(vspan, err.message, hint=err.hint).with_source(
                    assignment
                ) from None
        head, _, sub = key.partition(".")
        if sub:
            if head not in CALLS:
                self.where[head] = Span(name, 1, 1, 1, len(head) + 1)
                raise self.error(
                    head, f"{excerpt(head)} has no fields; only " + ", ".join(CALLS) + " do"
                )
            current = self.values.get(head) or {}
            if not isinstance(current, dict) or not current.get("name"):
                self.where[head] = Span(name, 1, 1, 1, len(head) + 1)
                raise self.error(head, f"set {head} first, e.g. --set {head}=NAME")
            self.where[key] = vspan
            self.where[f"{key}:name"] = Span(name, 1, 1, 1, len(key) + 1)  # an unknown key
            self.values[head] = {**current, sub: value}
            return
        self._set(key, value, Span(name, 1, 1, 1, len(key) + 1), vspan)

    def set_at(self, key: str, value: Any, key_span, value_span, text: str | None) -> None:
        """A setting read from another file (an experiment's), its errors located there."""
        if text is not None and (value_span or key_span):
            self.texts[(value_span or key_span).file] = text
        self._set(key, value, key_span, value_span)

    def set_value(self, key: str, value: Any) -> None:
        """A setting given from Python (``ddm.train(steps=…)``): no span, so its errors name
        the setting alone."""
        self._set(key, value, None)

    def _set(self, key: str, value: Any, key_span: Span | None, value_span: Span | None = None):
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1) if len(key) < 100 else []
            err = ConfigDiagnostic(
                key_span,
                f"unknown run setting {excerpt(key)}",
                hint=f"did you mean '{close[0]}'?" if close else "settings: " + ", ".join(KEYS),
            )
            err.source = self.texts.get(key_span.file) if key_span else None
            raise err
        if value_span or key_span:
            self.where[key] = value_span or key_span  # type: ignore[assignment]
        else:  # set from Python: no span (errors name the setting)
            self.where.pop(key, None)
        if key in CALLS and isinstance(value, str):
            value = {"name": value}
        self.values[key] = value

    # --- validation ----------------------------------------------------------------------------
    def _check_footprint(self, source, kwargs: dict) -> None:
        """Refuse a data source whose arrays could not fit in this machine's memory, before
        generating them (a huge n_train would otherwise end in an allocation failure)."""
        if source.nbytes is None:
            return
        need = source.nbytes(**{k: x for k, x in kwargs.items() if k != "name"})
        have = _physical_memory()
        if have is not None and need > have:
            sizes = ", ".join(
                f"{k}={kwargs[k]}" for k in ("n_train", "n_test", "steps", "window") if k in kwargs
            )
            raise self.error(
                "data",
                f"{source.name}({sizes}) would build {_bytes(need)} of arrays; "
                f"this machine has {_bytes(have)} of memory",
                hint="lower n_train / n_test",
            )

    def validate(self, sources, losses: tuple[str, ...] | None = None) -> "RunConfig":
        """Check every value; ``losses``: the program's named losses, which ``loss`` must
        name when it is set (None: not checked here)."""
        v = self.values
        if v["loss"] is None:  # ``--set loss=``: back to the default loss
            v["loss"] = ""
        if isinstance(v["diagnostics"], bool):  # YAML reads ``off`` as false (and ``on``)
            v["diagnostics"] = "basic" if v["diagnostics"] else "off"
        if isinstance(v["rules"], bool):
            v["rules"] = "on" if v["rules"] else "off"
        # a bare name in the run section: rules = off, devices = all
        for key in ("rules", "diagnostics", "loss", "devices"):
            if isinstance(v[key], dict) and set(v[key]) == {"name"}:
                v[key] = v[key]["name"]
        for key, (kind, _, rng) in SCALARS.items():
            v[key] = _coerce(self, key, v[key], kind, rng)
        if v["diagnostics"] not in ("basic", "full", "off"):
            raise self.error(
                "diagnostics",
                f"diagnostics must be basic, full or off; got {excerpt(v['diagnostics'])}",
            )
        if v["loss"] and losses is not None and v["loss"] not in losses:
            close = difflib.get_close_matches(v["loss"], losses, n=1)
            raise self.error(
                "loss",
                f"the program has no loss named {excerpt(v['loss'])}",
                hint=f"did you mean '{close[0]}'?"
                if close
                else (
                    "its named losses: " + ", ".join(losses)
                    if losses
                    else "name one in the program: loss NAME = ..."
                ),
            )
        opt = v["optimizer"]
        if not isinstance(opt, dict) or "name" not in opt:
            raise self.error("optimizer", "optimizer must name an optimiser, e.g. adam(lr=1e-3)")
        if not _named(opt, OPTIMIZERS):
            raise self.error(
                "optimizer",
                f"unknown optimizer {excerpt(opt['name'])}",
                hint="optimizers: " + ", ".join(OPTIMIZERS),
            )
        v["optimizer"] = _kwargs(self, "optimizer", opt, OPTIMIZERS[opt["name"]], OPTIMIZER_RANGES)
        o = v["optimizer"]
        if o["hypergradient"] > 0 and (o["schedule"] != "constant" or o["warmup"]):
            raise self.error(
                "optimizer.hypergradient",
                "a learned learning rate (hypergradient > 0) replaces the schedule",
                hint="drop schedule=/warmup=, or set hypergradient=0",
            )
        data = v["data"]
        if data is None:
            raise ConfigDiagnostic(
                None,
                "no data to train on: add data = SOURCE(...) to the "
                "program's run section or the config",
                hint="sources: " + ", ".join(sources),
            )
        if not _named(data, sources):
            name = data.get("name") if isinstance(data, dict) else data
            raise self.error(
                "data",
                f"unknown data source {excerpt(name)}",
                hint="sources: " + ", ".join(sources),
            )
        source = sources[data["name"]]
        mapped = {}
        if source.maps_inputs:  # the other keywords map inputs: checked against the program's
            mapped = {k: x for k, x in data.items() if k not in {a.name for a in source.kwargs}}
            mapped.pop("name")
            if isinstance(mapped.get("inputs"), dict):  # a validated config read back (resume)
                mapped.update(mapped.pop("inputs"))
            for k, x in mapped.items():
                ok = isinstance(x, str) or (
                    isinstance(x, list) and x and all(isinstance(c, str) for c in x)
                )
                if not ok:
                    raise self.error(
                        f"data.{k}",
                        f"{data['name']}: '{k}' maps an input to columns: give a column name, "
                        f'a list of names or "PREFIX*"; got {excerpt(x)}',
                        hint="its settings: " + ", ".join(a.name for a in source.kwargs),
                    )
            data = {k: x for k, x in data.items() if k not in mapped and k != "inputs"}
        v["data"] = _kwargs(self, "data", data, source.kwargs, source.ranges)
        if mapped:
            v["data"]["inputs"] = mapped
        self._check_footprint(source, v["data"])
        for key, (kinds, example) in CALL_KINDS.items():
            given = v.get(key)
            if given is None:
                continue
            if isinstance(given, dict) and "name" not in given:
                raise self.error(
                    key,
                    f"{key} needs a kind, e.g. {example} (in YAML: "
                    "{name: KIND, key: value}, a space after each colon)",
                )
            if not _named(given, kinds):
                name = given.get("name") if isinstance(given, dict) else given
                raise self.error(key, f"unknown {key} {excerpt(name)}", hint=example)
            v[key] = _kwargs(self, key, given, kinds[given["name"]], CALL_RANGES[key])
        if v["rules"] not in ("on", "off"):
            raise self.error("rules", f"rules must be on or off; got {excerpt(v['rules'])}")
        if v["target"] and not v["eval_every"]:
            raise self.error(
                "target",
                "a target is checked on the test set every eval_every steps, and eval_every is 0",
                hint="set eval_every = 50",
            )
        return self


def _named(given, table) -> bool:
    """Is ``given`` a call ``{"name": NAME, …}`` of a NAME in ``table``?"""
    return isinstance(given, dict) and isinstance(given.get("name"), str) and given["name"] in table


def _kwargs(cfg: RunConfig, key: str, given: dict, specs, ranges) -> dict:
    by_name = {a.name: a for a in specs}
    out = {"name": given["name"]}
    for k, value in given.items():
        if k == "name":
            continue
        if k not in by_name:
            at = f"{key}.{k}:name" if f"{key}.{k}:name" in cfg.where else f"{key}.{k}"
            raise cfg.error(
                at,
                f"{given['name']} has no setting {excerpt(str(k))}",
                hint="its settings: " + (", ".join(by_name) or "none"),
            )
        arg = by_name[k]
        out[k] = _coerce(cfg, f"{key}.{k}", value, arg.kind, ranges.get(k), arg.choices)
    for a in specs:
        if a.name not in out:
            if a.required:
                raise cfg.error(key, f"{given['name']} needs '{a.name}'")
            out[a.name] = a.default
    return out


def _coerce(cfg: RunConfig, key: str, value, kind: str, rng: Range | None, choices=None):
    """``value`` as a setting of ``kind`` inside ``rng``, or a located error saying why not."""
    got = excerpt(value)
    if kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise cfg.error(key, f"'{key}' must be an integer, got {got}")
    elif kind == "float":
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise cfg.error(key, f"'{key}' must be a number, got {got}")
        value = float(value) if abs(value) <= FLOAT32_MAX else value
        if value != value or value in (float("inf"), float("-inf")):
            raise cfg.error(key, f"'{key}' must be finite, got {got}")
        if abs(value) > FLOAT32_MAX:
            raise cfg.error(
                key,
                f"'{key}' must be at most {FLOAT32_MAX:.3g} in magnitude (the largest "
                f"float32), got {got}",
            )
    elif kind == "devices":
        if value == "all":
            return value
        if not isinstance(value, int) or isinstance(value, bool):
            raise cfg.error(
                key, f"'{key}' must be an integer (a number of devices) or all, got {got}"
            )
    elif kind == "bool":
        if not isinstance(value, bool):
            raise cfg.error(key, f"'{key}' must be true or false, got {got}")
    elif kind == "ints":
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= INT32_MAX for x in value
        )
        if not ok:
            raise cfg.error(
                key, f"'{key}' must be a list of feature indices (integers >= 0), got {got}"
            )
        value = tuple(value)
    elif kind == "str":
        if isinstance(value, datetime.date):  # YAML reads 2016-01-01 as a date
            value = value.isoformat()
        if not isinstance(value, str):
            raise cfg.error(key, f"'{key}' must be a string, got {got}")
        if len(value) > MAX_STRING:
            raise cfg.error(
                key, f"'{key}' is {len(value)} characters long; a setting has at most {MAX_STRING}"
            )
        if choices and value not in choices:
            raise cfg.error(key, f"'{key}' must be one of {', '.join(choices)}; got {got}")
    if rng is not None and kind in ("int", "float", "devices"):
        bound = rng.violation(value)
        if bound is not None:
            whole = rng.describe(integer=kind != "float")
            hint = None
            if rng.lo is not None and rng.hi is not None or rng.why:  # more than the bound
                what = "a number" if kind == "float" else "an integer"
                hint = f"{key}: {what} {whole}" + (f" ({rng.why})" if rng.why else "")
            raise cfg.error(key, f"'{key}' must be {bound}, got {got}", hint=hint)
    return value


def _plain(value):
    """A typed run setting as the plain value the config holds: calls become ``{"name": …,
    key: value}``, lists lists; a value the section cannot hold is reported where it was
    written."""
    if isinstance(value, Invalid):
        raise ConfigDiagnostic(value.span, value.message)
    if isinstance(value, Call):
        out: dict[str, Any] = {"name": value.name}
        for kw in value.kwargs:
            out[kw.name] = _plain(kw.value)
        return out
    if isinstance(value, tuple):
        return [_plain(x) for x in value]
    return value


def _mark_span(path: str, node) -> Span:
    m, e = node.start_mark, node.end_mark
    end_col = e.column + 1 if e.line == m.line else m.column + 2
    return Span(path, m.line + 1, m.column + 1, m.line + 1, end_col)


def _key_of(node, path: str, text: str) -> str:
    """A mapping key that names a setting: a plain string."""
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        return node.value
    err = ConfigDiagnostic(
        _mark_span(path, node),
        "a setting's name is a word such as steps, got "
        + (excerpt(node.value) if isinstance(node, yaml.ScalarNode) else "a " + node.id),
    )
    raise err.with_source(text)


def _read_config(path: str) -> str:
    where = Span(path, 0, 0, 0, 0)
    try:
        if os.path.isdir(path):
            raise ConfigDiagnostic(where, "config is a directory, not a YAML file")
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ConfigDiagnostic(
                where, f"config is {size} bytes; ddm reads configs up to {MAX_CONFIG_BYTES} bytes"
            )
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigDiagnostic(where, f"cannot read config: {exc.strerror or exc}") from None
    try:
        return decode_source(data, path)  # UTF-8, a byte-order mark dropped
    except DdmError as err:
        raise ConfigDiagnostic(err.span, err.message.replace("file", "config", 1)) from None


class _Unbounded(ConfigDiagnostic):
    """A YAML text nested too deep or expanding to too many values."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing while it composes a document nested deeper than
    ``MAX_YAML_DEPTH`` (composing recurses once per level) or holding more than
    ``MAX_YAML_VALUES`` values (the pure-Python reader is slow: stop early)."""

    def __init__(self, stream: str, path: str):
        super().__init__(stream)
        self.path, self.depth, self.nodes = path, 0, 0

    def compose_node(self, parent, index):  # type: ignore[override]
        self.depth += 1
        self.nodes += 1
        try:
            if self.nodes > MAX_YAML_VALUES:  # stop reading a huge document early
                mark = self.peek_event().start_mark
                raise _Unbounded(
                    Span(self.path, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2),
                    f"the YAML holds more than {MAX_YAML_VALUES} values",
                    hint="a run config is a mapping of settings, a few levels deep",
                )
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise _Unbounded(
                    Span(self.path, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2),
                    f"the YAML is nested more than {MAX_YAML_DEPTH} levels deep",
                    hint="a run config is a mapping of settings, a few levels deep",
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml(text: str, path: str):
    """``(node, value)`` of a YAML document, read safely and boundedly: nested at most
    ``MAX_YAML_DEPTH`` levels and at most ``MAX_YAML_VALUES`` values once its aliases are
    expanded — counted on the composed node graph, before any Python object is built.
    Raises :class:`ConfigDiagnostic` located in ``path``."""
    loader = None
    try:
        loader = _Loader(text, path)  # it refuses unprintable characters at once
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expansion(node, path)
        return node, loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        span = (
            Span(path, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2)
            if mark
            else Span(path, 0, 0, 0, 0)
        )
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigDiagnostic(span, f"invalid YAML: {problem}").with_source(text) from None
    except _Unbounded as err:
        raise err.with_source(text) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_expansion(root, path: str) -> None:
    """Count the values ``root`` stands for with every alias expanded (a node shared through
    aliases counts each time it is used; counts memoised per node), refusing more than
    ``MAX_YAML_VALUES`` and an alias that contains itself."""
    size: dict[int, int] = {}
    entered: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        kids = _children(node)
        if done:
            size[key] = n = 1 + sum(size[id(c)] for c in kids)
            if n > MAX_YAML_VALUES:
                raise _Unbounded(
                    _mark_span(path, node),
                    f"this YAML value expands to more than {MAX_YAML_VALUES} values "
                    "(aliases repeat what they name)",
                    hint="a run config is a few settings; write it out without nested aliases",
                )
            continue
        if key in size:
            continue
        if isinstance(node, yaml.ScalarNode) and node.tag == _INT and len(node.value) > 100:
            raise _Unbounded(  # int() refuses to read 4300 digits or more
                _mark_span(path, node),
                f"an integer of {len(node.value)} digits is too large for any setting",
            )
        if key in entered:  # reached again before it was finished: it contains itself
            raise _Unbounded(_mark_span(path, node), "a YAML alias refers to a value containing it")
        entered.add(key)
        stack.append((node, True))
        stack += [(c, False) for c in reversed(kids) if id(c) not in size]


_INT = "tag:yaml.org,2002:int"


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _bytes(n: int) -> str:
    """``171.8 TB``: decimal units, as disks and memory are sold."""
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} PB"


# --- --dim NAME=SIZE ---------------------------------------------------------------------------

_DIGITS = re.compile(r"[+-]?[0-9][0-9_]*")


def dim_sizes(pairs, dims) -> dict[str, int]:
    """The sizes ``--dim NAME=SIZE`` gives the program's symbolic dims (``dims``: the graph's
    ``DimSpec``\\ s), each checked: a declared dim's name, an integer from 1 to int64's
    largest, and no other value than a declared one's. An error is located in the argument
    (``<--dim I>``).

    >>> from ddm.compiler.ir import DimSpec
    >>> from ddm.dsl.span import UNKNOWN
    >>> dim_sizes(["N=8"], [DimSpec("N", None, UNKNOWN)])
    {'N': 8}
    >>> print(dim_sizes(["M=8"], [DimSpec("N", None, UNKNOWN)]))
    Traceback (most recent call last):
    ddm.runtime.errors.ConfigDiagnostic: <--dim 1>:1:1: error: the program has no dim 'M'
       1 | M=8
           ^
      hint: its dims: N
    """
    declared = {d.name: d.value for d in dims}
    return dict(_dim_size(pair, i, declared) for i, pair in enumerate(pairs, 1))


def _dim_size(pair: str, index: int, declared: dict) -> tuple[str, int]:
    where = f"<--dim {index}>"
    name, eq, raw = pair.partition("=")
    name, size_text = name.strip(), raw.strip()
    span = Span(where, 1, len(pair) - len(raw) + 1, 1, len(pair) + 1)  # at the size
    hint = None
    if not eq or not name:
        span = Span(where, 1, 1, 1, len(pair) + 1)
        message = f"--dim takes NAME=SIZE, got {excerpt(pair)}"
    elif name not in declared:
        span = Span(where, 1, 1, 1, max(2, len(name) + 1))
        close = difflib.get_close_matches(name, declared, n=1) if len(name) < 100 else []
        message = f"the program has no dim {excerpt(name)}"
        known = ", ".join(declared) or "none"
        hint = f"did you mean '{close[0]}'?" if close else f"its dims: {known}"
    elif not _DIGITS.fullmatch(size_text):
        message = f"--dim {name}: a size is an integer, got {excerpt(size_text)}"
    else:
        digits = size_text.replace("_", "").lstrip("+")
        # more digits than int64 has: out of range, and too long for int() to read
        size = MAX_INT + 1 if len(digits.lstrip("-0")) > len(str(MAX_INT)) else int(digits)
        fixed = declared[name]
        if not 1 <= size <= MAX_INT:
            bound = "at least 1" if size < 1 else f"at most {MAX_INT} (int64)"
            message = f"--dim {name} must be {bound}, got {excerpt(size_text)}"
        elif fixed is not None and fixed != size:
            message = f"dim '{name}' is declared = {fixed} in the program; --dim cannot change it"
            hint = "--dim sizes the dims declared without a value"
        else:
            return name, size
    raise ConfigDiagnostic(span, message, hint=hint).with_source(pair)
