"""An experiment file (``EXPERIMENT.yaml``) read into a typed, validated :class:`Experiment`.

The file names one program and everything compared on its test paths (docs/experiments.md)::

    program: ../deep_hedge.ddm        # relative to this file
    seeds: [0, 1, 2, 3, 4]            # or a count: 5 → 0…4
    settings: {steps: 1500}           # run settings of every learned method
    data: {cost: 0.001}               # keywords merged into the program's data source
    markets:                          # optional: named data variations, each a full comparison
      cost0: {cost: 0.0}
    methods:                          # learned: one training run per (variant, seed)
      net: {output: pnl_net}
      net_blind: {output: pnl_net, variant: {stop_gradient: [x]}}
    baselines:                        # not learned here, evaluated on the same test paths
      delta: {node: pnl_delta}
      dp: {kind: dp_optimum}
    metrics:
      entropic: {stat: entropic_risk, better: lower}
    comparisons:
      - {method: net, against: [delta, dp], metric: entropic}
    statistics: {resamples: 2000, confidence: 0.95, seed: 0}
    reduced: {seeds: 2, settings: {steps: 20}, data: {n_test: 2000}}   # --reduced

Every mistake is a :class:`~ddm.runtime.errors.ConfigDiagnostic` located at its key or value in
the file, with the line and a caret; names that do not exist get a did-you-mean.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from ddm.dsl.span import Span
from ddm.runtime.config import _read_config, load_yaml
from ddm.runtime.errors import ConfigDiagnostic

TOP = (
    "name",
    "program",
    "x64",
    "seeds",
    "vmap_seeds",
    "settings",
    "data",
    "markets",
    "methods",
    "baselines",
    "metrics",
    "comparisons",
    "statistics",
    "regimes",
    "scorecard",
    "reduced",
)
STATS = ("mean", "std", "var", "sharpe", "entropic_risk", "expected_shortfall", "median")
# each statistic's settings and the values they take
STAT_ARGS = {
    "sharpe": {"periods": lambda v: int(v) == v and v >= 1},
    "entropic_risk": {"risk_aversion": lambda v: v > 0},
    "expected_shortfall": {"level": lambda v: 0 < v <= 1},
}
_RULES = {
    "periods": "is a whole number of periods a year, at least 1",
    "risk_aversion": "must be positive",
    "level": "is the tail's share, in (0, 1]",
}
BETTER = ("higher", "lower")
METHOD_KEYS = ("output", "variant", "settings")
STATISTICS = {
    "resamples": (int, 2000),
    "confidence": (float, 0.95),
    "seed": (int, 0),
    "effect": (float, 0.3),  # the effect size the power analysis is for (plan §5.2)
    "power": (float, 0.95),
    "alpha": (float, 0.05),  # the test level of the power analysis and of BH's false discoveries
    "bca": (bool, False),
}


@dataclass(frozen=True)
class Metric:
    """A statistic of a method's per-path values, and which direction is better."""

    name: str
    stat: str
    better: str
    args: Mapping[str, float] = field(default_factory=dict)  # periods, risk_aversion, level


@dataclass(frozen=True)
class Method:
    """A learned method: the program (a variant of it) trained per seed; ``output`` the node
    whose per-sample values are its per-path result."""

    name: str
    output: str
    variant: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """Methods with the same variant and settings share their training runs."""
        import json

        return json.dumps([self.variant, self.settings], sort_keys=True, default=str)


@dataclass(frozen=True)
class Baseline:
    """A reference evaluated on the same test paths: ``kind`` is ``node`` (a parameter-free
    node of the program, ``args["node"]``) or a registered baseline (runtime/experiment/
    baselines.py) with its keyword ``args``."""

    name: str
    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison:
    """``method`` against ``against`` on ``metric``; with ``within``, also the hypothesis that
    the method is at most ``within`` worse (in the metric's units): Δ ≥ −within."""

    method: str
    against: str
    metric: str
    within: float | None = None


@dataclass(frozen=True)
class Experiment:
    name: str
    path: str  # the experiment file
    program: str  # absolute path of the .ddm file
    x64: bool
    seeds: tuple[int, ...]
    vmap_seeds: bool
    settings: Mapping[str, Any]
    data: Mapping[str, Any]
    markets: Mapping[str, Mapping[str, Any]]  # name → data keywords; {"default": {}} when none
    skips: Mapping[str, tuple[str, ...]]  # market → the baselines that do not apply there
    methods: tuple[Method, ...]
    baselines: tuple[Baseline, ...]
    metrics: tuple[Metric, ...]
    comparisons: tuple[Comparison, ...]
    statistics: Mapping[str, Any]
    regimes: Mapping[str, Any]  # {"volatility": NODE, "metric": METRIC}
    scorecard: Mapping[str, Any]
    raw: Mapping[str, Any]  # the file's mapping as read (after --reduced), for results.json
    reduced: bool = False
    # the file's spans: a run setting or data keyword is checked where it is used (run.py's
    # config_for) and its error points here
    where: Any = field(default=None, compare=False, repr=False)

    def spans(self, *paths: tuple) -> tuple[Span | None, Span | None]:
        """The key's and the value's span of the first of ``paths`` the file has (a path in
        the ``reduced`` section only when the experiment is reduced)."""
        if self.where is None:
            return None, None
        for at in paths:
            if at and at[0] == "reduced" and not self.reduced:
                continue
            if at in self.where.values:
                return self.where.keys.get(at), self.where.values[at]
        return None, None

    def method(self, name: str) -> Method | Baseline:
        for m in (*self.methods, *self.baselines):
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.methods) + tuple(b.name for b in self.baselines)


class _Where:
    """Spans of a YAML document's keys and values by path (``("methods", "net", "output")``)."""

    def __init__(self, node, path: str, text: str):
        self.path, self.text = path, text
        self.keys: dict[tuple, Span] = {}
        self.values: dict[tuple, Span] = {}
        self._walk(node, ())

    def _span(self, node) -> Span:
        m, e = node.start_mark, node.end_mark
        end = e.column + 1 if e.line == m.line else m.column + 2
        return Span(self.path, m.line + 1, m.column + 1, m.line + 1, end)

    def _walk(self, node, at: tuple) -> None:
        self.values[at] = self._span(node)
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = (*at, k.value if isinstance(k, yaml.ScalarNode) else str(k))
                if key in self.keys:  # YAML keeps the last silently: two methods named alike
                    err = ConfigDiagnostic(self._span(k), f"'{key[-1]}' is given twice here")
                    err.source = self.text
                    raise err
                self.keys[key] = self._span(k)
                self._walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                self._walk(v, (*at, i))

    def error(self, at: tuple, message: str, hint: str | None = None, key: bool = False):
        table = self.keys if key else self.values
        span = None
        while span is None and at is not None:
            span = table.get(at) or self.values.get(at)
            at = at[:-1] if at else None  # type: ignore[assignment]
        err = ConfigDiagnostic(span, message, hint=hint)
        if span is not None:
            err.source = self.text
        return err


def _close(name: str, names) -> str | None:
    found = difflib.get_close_matches(str(name), [str(n) for n in names], n=1)
    return f"did you mean '{found[0]}'?" if found else None


MERGED = ("settings", "data", "statistics", "baselines", "scorecard", "regimes")


def _merge(base: Mapping, over: Mapping) -> dict:
    """The file with its ``reduced`` section applied: the mappings of :data:`MERGED` are
    updated key by key (``data: {n_test: 2000}`` keeps the other data keywords; a baseline
    given there replaces that baseline), every other key is replaced (``markets``,
    ``seeds``, ``methods``, ``comparisons``)."""
    out = dict(base)
    for k, v in over.items():
        if k in MERGED and isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def load(path: str, reduced: bool = False) -> Experiment:
    """Read and validate the experiment file at ``path`` (``reduced``: apply its ``reduced``
    section, the configuration CI runs)."""
    text = _read_config(path)
    node, data = load_yaml(text, path)
    where = _Where(node, path, text) if node is not None else None
    if not isinstance(data, dict) or where is None:
        raise ConfigDiagnostic(
            Span(path, 1, 1, 1, 2) if text else None,
            "an experiment file is a mapping with at least 'program' and 'methods'",
        ).with_source(text)
    return parse(data, where, path, reduced)


def parse(data: dict, where: _Where, path: str, reduced: bool = False) -> Experiment:
    for key in data:
        if key not in TOP:
            raise where.error(
                (key,),
                f"unknown experiment key '{key}'",
                _close(key, TOP) or "keys: " + ", ".join(TOP),
                key=True,
            )
    if reduced:
        if "reduced" not in data:
            raise where.error((), "--reduced: this experiment has no 'reduced' section")
        red = _mapping(data["reduced"], ("reduced",), where)
        for key in red:
            if key not in TOP or key == "reduced":
                raise where.error(("reduced", key), f"'{key}' cannot be reduced", key=True)
        data = _merge(data, red)
    for key in ("program", "methods"):
        if key not in data:
            raise where.error((), f"the experiment names no '{key}'")
    base = os.path.dirname(os.path.abspath(path))
    program = data["program"]
    if not isinstance(program, str) or not program.endswith(".ddm"):
        raise where.error(("program",), "'program' is the path of a .ddm file")
    program = os.path.normpath(os.path.join(base, program))
    if not os.path.isfile(program):
        raise where.error(("program",), f"no such program: {program}")

    seeds = data.get("seeds", 1)
    if isinstance(seeds, bool) or not (
        (isinstance(seeds, int) and seeds >= 1)
        or (
            isinstance(seeds, list)
            and seeds
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
            and len(set(seeds)) == len(seeds)
        )
    ):
        raise where.error(
            ("seeds",), "'seeds' is a count (≥ 1) or a list of distinct non-negative integers"
        )
    seeds = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)

    settings = _mapping(data.get("settings", {}), ("settings",), where)
    data_kw = _mapping(data.get("data", {}), ("data",), where)
    markets: dict[str, dict] = {}
    skips: dict[str, tuple[str, ...]] = {}
    for k, v in _mapping(data.get("markets", {}), ("markets",), where).items():
        v = _mapping(v, ("markets", k), where)
        if "data" in v or "skip" in v:  # {data: {…}, skip: [baselines that do not apply]}
            for key in v:
                if key not in ("data", "skip"):
                    raise where.error(
                        ("markets", k, key),
                        f"market '{k}': unknown key '{key}'",
                        "keys: data, skip",
                        key=True,
                    )
            markets[str(k)] = _mapping(v.get("data", {}), ("markets", k, "data"), where)
            skips[str(k)] = _names(v.get("skip", []), ("markets", k, "skip"), where)
        else:
            markets[str(k)] = v
    markets = markets or {"default": {}}

    methods = []
    for name, body in _mapping(data["methods"], ("methods",), where).items():
        body = _mapping(body or {}, ("methods", name), where)
        for k in body:
            if k not in METHOD_KEYS:
                raise where.error(
                    ("methods", name, k),
                    f"unknown key '{k}' of method '{name}'",
                    _close(k, METHOD_KEYS) or "keys: " + ", ".join(METHOD_KEYS),
                    key=True,
                )
        output = body.get("output")
        if not isinstance(output, str):
            raise where.error(
                ("methods", name), f"method '{name}' names no 'output' node (its per-path result)"
            )
        methods.append(
            Method(
                str(name),
                output,
                _mapping(body.get("variant", {}), ("methods", name, "variant"), where),
                _mapping(body.get("settings", {}), ("methods", name, "settings"), where),
            )
        )
    if not methods:
        raise where.error(("methods",), "the experiment has no methods")

    from ddm.runtime.experiment.baselines import KINDS

    baselines = []
    for name, body in _mapping(data.get("baselines", {}), ("baselines",), where).items():
        body = dict(_mapping(body, ("baselines", name), where))
        given_kind = "kind" in body
        kind = body.pop("kind", "node" if "node" in body else None)
        if kind is None:
            raise where.error(
                ("baselines", name),
                f"baseline '{name}' names no kind (kind: whalley_wilmott, …) and no node",
                "kinds: " + ", ".join(sorted(KINDS)),
            )
        if not isinstance(kind, str) or kind not in KINDS:
            raise where.error(
                ("baselines", name, "kind") if given_kind else ("baselines", name),
                f"baseline '{name}': unknown kind {kind!r}",
                _close(kind, KINDS) or "kinds: " + ", ".join(sorted(KINDS)),
            )
        if kind == "node" and not isinstance(body.get("node"), str):
            raise where.error(("baselines", name), f"baseline '{name}' names no 'node'")
        baselines.append(Baseline(str(name), kind, body))
    names = [m.name for m in methods] + [b.name for b in baselines]
    for market, skip in skips.items():
        for b in skip:
            if b not in [x.name for x in baselines]:
                raise where.error(
                    ("markets", market, "skip"),
                    f"market '{market}' skips {b!r}, which is no baseline",
                    _close(b, [x.name for x in baselines]),
                )
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise where.error(("baselines", dup), f"'{dup}' is both a method and a baseline")

    metrics = []
    for name, body in _mapping(data.get("metrics", {}), ("metrics",), where).items():
        body = dict(_mapping(body, ("metrics", name), where))
        stat, better = body.pop("stat", None), body.pop("better", None)
        if stat not in STATS:
            raise where.error(
                ("metrics", name, "stat"),
                f"metric '{name}': unknown stat {stat!r}",
                _close(stat, STATS) or "stats: " + ", ".join(STATS),
            )
        if better not in BETTER:
            raise where.error(("metrics", name), f"metric '{name}': 'better' is higher or lower")
        allowed = STAT_ARGS.get(stat, {})
        for k, v in body.items():
            if k not in allowed:
                raise where.error(
                    ("metrics", name, k),
                    f"metric '{name}': {stat} takes no '{k}'",
                    _close(k, allowed)
                    or ("its settings: " + ", ".join(allowed) if allowed else None),
                    key=True,
                )
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not allowed[k](v):
                raise where.error(("metrics", name, k), f"metric '{name}': {k} {_RULES[k]}")
        metrics.append(Metric(str(name), stat, better, body))
    if not metrics:
        metrics = [Metric("mean", "mean", "higher")]
    metric_names = [m.name for m in metrics]

    comparisons = []
    for i, body in enumerate(_list(data.get("comparisons", []), ("comparisons",), where)):
        at = ("comparisons", i)
        body = _mapping(body, at, where)
        if "against" not in body:
            raise where.error(at, "comparison: 'against' names the methods it is compared with")
        against = _names(body["against"], (*at, "against"), where)
        metric_list = _names(body.get("metric", metric_names), (*at, "metric"), where)
        known = "methods and baselines: " + ", ".join(names)
        if body.get("method") not in names:
            raise where.error(
                (*at, "method"),
                f"comparison: unknown method {body.get('method')!r}",
                _close(str(body.get("method")), names) or known,
            )
        for j, a in enumerate(against):
            if a not in names:
                raise where.error(
                    (*at, "against", j)
                    if isinstance(body.get("against"), list)
                    else (*at, "against"),
                    f"comparison: unknown method {a!r}",
                    _close(a, names) or known,
                )
        for m in metric_list:
            if m not in metric_names:
                raise where.error(
                    (*at, "metric"), f"comparison: unknown metric {m!r}", _close(m, metric_names)
                )
        for k in body:
            if k not in ("method", "against", "metric", "within"):
                raise where.error(
                    (*at, k),
                    f"comparison: unknown key '{k}'",
                    "keys: method, against, metric, within",
                    key=True,
                )
        within = body.get("within")
        if within is not None and (
            isinstance(within, bool) or not isinstance(within, (int, float)) or within < 0
        ):
            raise where.error(
                (*at, "within"), "comparison: within is a non-negative number (the metric's units)"
            )
        for a in against:
            for m in metric_list:
                comparisons.append(
                    Comparison(body["method"], a, m, None if within is None else float(within))
                )

    statistics = {}
    given = _mapping(data.get("statistics", {}), ("statistics",), where)
    for k in given:
        if k not in STATISTICS:
            raise where.error(
                ("statistics", k), f"unknown statistics key '{k}'", _close(k, STATISTICS), key=True
            )
    for k, (kind, default) in STATISTICS.items():
        v = given.get(k, default)
        ok = (
            isinstance(v, bool)
            if kind is bool
            else (isinstance(v, (int, float)) and not isinstance(v, bool))
        )
        if not ok or (kind is int and int(v) != v):
            raise where.error(("statistics", k), f"statistics: {k} must be {kind.__name__}")
        statistics[k] = kind(v)
    if statistics["effect"] <= 0:
        raise where.error(("statistics", "effect"), "statistics: effect must be positive")
    if statistics["power"] <= statistics["alpha"]:
        raise where.error(("statistics", "power"), "statistics: power must exceed alpha")
    if statistics["seed"] < 0:
        raise where.error(("statistics", "seed"), "statistics: seed must be non-negative")
    if statistics["resamples"] < 100:
        raise where.error(("statistics", "resamples"), "statistics: resamples must be at least 100")
    for k in ("confidence", "power", "alpha"):
        if not 0 < statistics[k] < 1:
            raise where.error(
                ("statistics", k), f"statistics: {k} must lie strictly between 0 and 1"
            )

    regimes = _mapping(data.get("regimes", {}), ("regimes",), where)
    for k, v in regimes.items():
        if k not in ("volatility", "metric"):
            raise where.error(
                ("regimes", k), f"regimes: unknown key '{k}'", "keys: volatility, metric", key=True
            )
        if not isinstance(v, str):
            raise where.error(("regimes", k), f"regimes: {k} is a name")
    if regimes and "volatility" not in regimes:
        raise where.error(("regimes",), "regimes: 'volatility' names the per-path volatility node")
    if "metric" in regimes and regimes["metric"] not in metric_names:
        raise where.error(
            ("regimes", "metric"),
            f"regimes: unknown metric {regimes['metric']!r}",
            _close(regimes["metric"], metric_names),
        )
    scorecard = _scorecard(
        data.get("scorecard", {}), where, methods, baselines, metric_names, list(markets)
    )
    x64 = data.get("x64", False)
    vmap_seeds = data.get("vmap_seeds", True)
    for key, v in (("x64", x64), ("vmap_seeds", vmap_seeds)):
        if not isinstance(v, bool):
            raise where.error((key,), f"'{key}' is true or false")
    name = data.get("name") or os.path.splitext(os.path.basename(path))[0]
    return Experiment(
        name=str(name),
        path=os.path.abspath(path),
        program=program,
        x64=x64,
        seeds=seeds,
        vmap_seeds=vmap_seeds,
        settings=settings,
        data=data_kw,
        markets=markets,
        skips=skips,
        methods=tuple(methods),
        baselines=tuple(baselines),
        metrics=tuple(metrics),
        comparisons=tuple(comparisons),
        statistics=statistics,
        regimes=regimes,
        scorecard=scorecard,
        raw={k: v for k, v in data.items() if k != "reduced"},
        reduced=reduced,
        where=where,
    )


# scorecard row → its keys and what each takes
CARD_ROWS = {
    "performance": {"against": "any", "metric": "metric"},
    "latency": {"against": "baseline"},
    "interpretability": {
        "of": "name",
        "wrt": "name",
        "reference": "indices",
        "top": "number",
        "samples": "number",
    },
    "reproducibility": {"steps": "number"},
    "phi_integration": {"metric": "name"},
    "hybrid_efficiency": {"against": "learned", "metric": "name", "value": "number"},
}


def _scorecard(value, where: _Where, methods, baselines, metric_names, markets) -> dict:
    card = _mapping(value, ("scorecard",), where)
    if not card:
        return card
    learned = [m.name for m in methods]
    every = learned + [b.name for b in baselines]
    for key, v in card.items():
        at = ("scorecard", key)
        if key == "method":
            if v not in learned:
                raise where.error(
                    at,
                    f"scorecard: method {v!r} is not a learned method",
                    _close(str(v), learned) or "methods: " + ", ".join(learned),
                )
            continue
        if key == "market":
            if v not in markets:
                raise where.error(
                    at,
                    f"scorecard: no market {v!r}",
                    _close(str(v), markets) or "markets: " + ", ".join(markets),
                )
            continue
        if key not in CARD_ROWS:
            raise where.error(
                at,
                f"scorecard: unknown row '{key}'",
                _close(key, [*CARD_ROWS, "method", "market"]),
                key=True,
            )
        row = _mapping(v, at, where)
        for k, x in row.items():
            kind = CARD_ROWS[key].get(k)
            if kind is None:
                raise where.error(
                    (*at, k),
                    f"scorecard.{key}: unknown key '{k}'",
                    "keys: " + ", ".join(CARD_ROWS[key]),
                    key=True,
                )
            pool = {"any": every, "baseline": [b.name for b in baselines], "learned": learned}.get(
                kind
            )
            if pool is not None and x not in pool:
                raise where.error(
                    (*at, k),
                    f"scorecard.{key}: {k} {x!r} is not one of {', '.join(pool)}",
                    _close(str(x), pool),
                )
            if kind == "metric" and x not in metric_names:
                raise where.error(
                    (*at, k), f"scorecard.{key}: unknown metric {x!r}", _close(str(x), metric_names)
                )
            if kind == "name" and not isinstance(x, str):
                raise where.error((*at, k), f"scorecard.{key}: {k} is a name")
            if kind == "number" and (isinstance(x, bool) or not isinstance(x, (int, float))):
                raise where.error((*at, k), f"scorecard.{key}: {k} must be a number")
            if kind == "indices" and not (
                isinstance(x, list)
                and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in x)
            ):
                raise where.error((*at, k), f"scorecard.{key}: {k} is a list of feature indices")
        needs = {
            "performance": ("against",),
            "latency": ("against",),
            "interpretability": ("of", "wrt", "reference"),
            "phi_integration": ("metric",),
            "hybrid_efficiency": ("against", "metric", "value"),
        }
        for k in needs.get(key, ()):
            if k not in row:
                raise where.error(at, f"scorecard.{key} needs '{k}'")
    if "method" not in card:
        raise where.error(
            ("scorecard",), "scorecard: 'method' names the learned method the card is about"
        )
    return card


def _names(value, at: tuple, where: _Where) -> tuple[str, ...]:
    """A name or a list of names."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise where.error(at, f"'{'.'.join(map(str, at))}' is a name or a list of names")


def _mapping(value, at: tuple, where: _Where) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise where.error(at, f"'{'.'.join(map(str, at))}' must be a mapping (key: value)")
    return {str(k): v for k, v in value.items()}


def _list(value, at: tuple, where: _Where) -> list:
    if not isinstance(value, list):
        raise where.error(at, f"'{'.'.join(map(str, at))}' must be a list")
    return value
