"""Run configuration: the program's ``run { }`` section, then a YAML file, then ``--set``.

Every value remembers where it was written, so a bad one is reported at its own line and
column — in the ``.ddm`` file, in the YAML file, or in the ``--set`` argument.

>>> cfg = RunConfig.defaults()
>>> cfg.values["steps"], cfg.values["optimizer"]["name"]
(1000, 'adam')
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml

from ddm.compiler.settings import Call, Invalid, RunSettings
from ddm.dsl.span import Span
from ddm.library.op import Arg
from ddm.runtime.errors import ConfigDiagnostic

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

# key: (kind, default, minimum)
SCALARS = {
    "steps": ("int", 1000, 1),
    "batch": ("int", 256, 1),
    "seed": ("int", 0, 0),
    "x64": ("bool", False, None),
    "eval_every": ("int", 0, 0),
    "log_every": ("int", 50, 1),
    "clip_norm": ("float", 0.0, 0.0),
    "checkpoint_every": ("int", 0, 0),
    "loss": ("str", "", None),  # a named loss (``loss NAME = …``) to train instead
    "diagnostics": ("str", "basic", None),  # gradient statistics on log steps (diagnostics.py)
    "rules": ("str", "on", None),  # off: train without the Φ-rules' loss terms ("pure DP")
    "compare_rules": ("bool", False, None),  # --run trains rules off and on, same seed
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
CALLS = ("data", "optimizer") + tuple(CALL_KINDS)
KEYS = tuple(SCALARS) + CALLS


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
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigDiagnostic(
                Span(path, 0, 0, 0, 0), f"cannot read config: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise ConfigDiagnostic(Span(path, 0, 0, 0, 0), "config is not UTF-8 text") from None
        self.texts[path] = text
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            span = (
                Span(path, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2)
                if mark
                else Span(path, 0, 0, 0, 0)
            )
            err = ConfigDiagnostic(span, f"invalid YAML: {getattr(exc, 'problem', exc)}")
            err.source = text
            raise err from None
        if data is None:
            return
        if not isinstance(data, dict):
            err = ConfigDiagnostic(
                _mark_span(path, node), "a run config is a mapping of keys such as steps: 100"
            )
            err.source = text
            raise err
        for key_node, value_node in node.value:
            key = key_node.value
            value = data[key]
            span = _mark_span(path, key_node)
            if isinstance(value, dict):
                value = dict(value)
                for k_node, v_node in value_node.value:
                    self.where[f"{key}.{k_node.value}"] = _mark_span(path, v_node)
                    # an unknown setting is reported at its name, not its value
                    self.where[f"{key}.{k_node.value}:name"] = _mark_span(path, k_node)
            self._set(key, value, span, _mark_span(path, value_node))

    def apply_set(self, assignment: str, index: int) -> None:
        """``--set key=value`` or ``--set optimizer.lr=3e-4``; the value is parsed as YAML."""
        name = f"<--set {index}>"
        self.texts[name] = assignment
        key, eq, raw = assignment.partition("=")
        if not eq or not key.strip():
            err = ConfigDiagnostic(
                Span(name, 1, 1, 1, len(assignment) + 1),
                f"--set takes KEY=VALUE, got '{assignment}'",
            )
            err.source = assignment
            raise err
        key = key.strip()
        vspan = Span(name, 1, len(key) + 2, 1, len(assignment) + 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        head, _, sub = key.partition(".")
        if sub:
            if head not in CALLS:
                self.where[head] = Span(name, 1, 1, 1, len(head) + 1)
                raise self.error(head, f"'{head}' has no fields; only " + ", ".join(CALLS) + " do")
            current = self.values.get(head) or {}
            if not isinstance(current, dict) or not current.get("name"):
                self.where[head] = Span(name, 1, 1, 1, len(head) + 1)
                raise self.error(head, f"set {head} first, e.g. --set {head}=NAME")
            self.where[key] = vspan
            self.values[head] = {**current, sub: value}
            return
        self._set(key, value, Span(name, 1, 1, 1, len(key) + 1), vspan)

    def _set(self, key: str, value: Any, key_span: Span, value_span: Span | None = None):
        if key not in KEYS:
            close = difflib.get_close_matches(key, KEYS, n=1)
            err = ConfigDiagnostic(
                key_span,
                f"unknown run setting '{key}'",
                hint=f"did you mean '{close[0]}'?" if close else "settings: " + ", ".join(KEYS),
            )
            err.source = self.texts.get(key_span.file)
            raise err
        self.where[key] = value_span or key_span
        if key in CALLS and isinstance(value, str):
            value = {"name": value}
        self.values[key] = value

    # --- validation ----------------------------------------------------------------------------
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
        for key in ("rules", "diagnostics"):  # a bare name in the run section: rules = off
            if isinstance(v[key], dict) and set(v[key]) == {"name"}:
                v[key] = v[key]["name"]
        for key, (kind, _, minimum) in SCALARS.items():
            v[key] = _coerce(self, key, v[key], kind, minimum)
        if v["diagnostics"] not in ("basic", "full", "off"):
            raise self.error(
                "diagnostics", f"diagnostics must be basic, full or off; got {v['diagnostics']!r}"
            )
        if v["loss"] and losses is not None and v["loss"] not in losses:
            close = difflib.get_close_matches(v["loss"], losses, n=1)
            raise self.error(
                "loss",
                f"the program has no loss named '{v['loss']}'",
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
        if opt["name"] not in OPTIMIZERS:
            raise self.error(
                "optimizer",
                f"unknown optimizer '{opt['name']}'",
                hint="optimizers: " + ", ".join(OPTIMIZERS),
            )
        v["optimizer"] = _kwargs(self, "optimizer", opt, OPTIMIZERS[opt["name"]])
        for k in ("lr",):
            if v["optimizer"][k] <= 0:
                raise self.error(
                    f"optimizer.{k}", f"optimizer {k} must be > 0, got {v['optimizer'][k]}"
                )
        o = v["optimizer"]
        if o["hypergradient"] < 0:
            raise self.error(
                "optimizer.hypergradient",
                "hypergradient is the step size of the "
                f"learned log learning rate and must be >= 0, got "
                f"{o['hypergradient']}",
            )
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
        if not isinstance(data, dict) or data.get("name") not in sources:
            name = data.get("name") if isinstance(data, dict) else data
            raise self.error(
                "data", f"unknown data source '{name}'", hint="sources: " + ", ".join(sources)
            )
        v["data"] = _kwargs(self, "data", data, sources[data["name"]].kwargs)
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
            if not isinstance(given, dict) or given.get("name") not in kinds:
                name = given.get("name") if isinstance(given, dict) else given
                raise self.error(key, f"unknown {key} '{name}'", hint=example)
            v[key] = _kwargs(self, key, given, kinds[given["name"]])
        if v["rules"] not in ("on", "off"):
            raise self.error("rules", f"rules must be on or off; got {v['rules']!r}")
        if v["saliency"]:
            for k in ("top", "samples"):
                if v["saliency"][k] < 1:
                    raise self.error(f"saliency.{k}", f"saliency {k} must be at least 1")
        if v["orthogonality"] and v["orthogonality"]["weight"] < 0:
            raise self.error("orthogonality.weight", "the orthogonality weight must be >= 0")
        if v["curriculum"]:
            c = v["curriculum"]
            if not 0 <= c["strength"] <= 1:
                raise self.error(
                    "curriculum.strength",
                    "curriculum strength is the share of "
                    f"rule-weighted sampling, in [0, 1]; got {c['strength']}",
                )
            if c["every"] < 1:
                raise self.error("curriculum.every", "curriculum every must be at least 1")
        if v["target"] and not v["eval_every"]:
            raise self.error(
                "target",
                "a target is checked on the test set every eval_every steps, and eval_every is 0",
                hint="set eval_every = 50",
            )
        return self


def _kwargs(cfg: RunConfig, key: str, given: dict, specs) -> dict:
    by_name = {a.name: a for a in specs}
    out = {"name": given["name"]}
    for k, value in given.items():
        if k == "name":
            continue
        if k not in by_name:
            at = f"{key}.{k}:name" if f"{key}.{k}:name" in cfg.where else f"{key}.{k}"
            raise cfg.error(
                at,
                f"{given['name']} has no setting '{k}'",
                hint="its settings: " + (", ".join(by_name) or "none"),
            )
        out[k] = _coerce(cfg, f"{key}.{k}", value, by_name[k].kind, None, by_name[k].choices)
    for a in specs:
        if a.name not in out:
            if a.required:
                raise cfg.error(key, f"{given['name']} needs '{a.name}'")
            out[a.name] = a.default
    return out


def _coerce(cfg: RunConfig, key: str, value, kind: str, minimum, choices=None):
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok:
            raise cfg.error(key, f"'{key}' must be an integer, got {value!r}")
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise cfg.error(key, f"'{key}' must be a number, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise cfg.error(key, f"'{key}' must be finite, got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise cfg.error(key, f"'{key}' must be true or false, got {value!r}")
    elif kind == "ints":
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value
        )
        if not ok:
            raise cfg.error(
                key, f"'{key}' must be a list of feature indices (integers >= 0), got {value!r}"
            )
        value = tuple(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise cfg.error(key, f"'{key}' must be a string, got {value!r}")
        if choices and value not in choices:
            raise cfg.error(key, f"'{key}' must be one of {', '.join(choices)}; got {value!r}")
    if minimum is not None and value < minimum:
        raise cfg.error(key, f"'{key}' must be at least {minimum}, got {value!r}")
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
