"""An experiment's artefacts: ``results.json`` (every number), ``timing.json`` (every clock
reading), ``report.md`` (the scorecard, one table per question) and ``figures/``.

``results.json`` holds only what the seeds determine, so the same experiment and seed give the
same file bit for bit; wall times and latencies (which the clock decides) go to ``timing.json``,
and the latency row of the scorecard is read from there into the report. Nothing in the report
is typed in: every figure is formatted from these two files' content, and a hypothesis that
fails is reported as failed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from typing import Any

import numpy as np

from ddm.runtime.checkpoint import atomic_write

__all__ = ["write", "split_timing"]

# clock readings, and how seeds were grouped (it depends on the device's memory)
CLOCK_KEYS = ("wall_s", "solve_s", "train_s", "compile_s", "training")


def split_timing(results: dict) -> tuple[Any, dict]:
    """``(results without clock readings, the clock readings by path)``."""
    timing: dict[str, Any] = {}

    def strip(x, path: str):
        if isinstance(x, dict):
            out = {}
            for k, v in x.items():
                p = f"{path}.{k}" if path else k
                if k in CLOCK_KEYS:
                    timing[p] = v
                elif k == "scorecard" and isinstance(v, dict) and "latency" in v:
                    timing[f"{p}.latency"] = v["latency"]
                    out[k] = {r: strip(row, f"{p}.{r}") for r, row in v.items() if r != "latency"}
                elif k == "kill_criteria" and isinstance(v, list):
                    keep = [c for c in v if "latency" not in c["criterion"]]
                    timing[p] = [c for c in v if "latency" in c["criterion"]]
                    out[k] = keep
                else:
                    out[k] = strip(v, p)
            return out
        if isinstance(x, list):
            return [strip(v, f"{path}[{i}]") for i, v in enumerate(x)]
        return x

    return strip(results, ""), timing


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("ddmc", "jax", "jaxlib", "numpy", "scipy", "optax", "lightgbm", "optuna"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _commit(path: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.path.dirname(path),
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _json(value) -> bytes:
    def plain(x):
        if isinstance(x, (np.floating, np.integer)):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
        return str(x)

    return (json.dumps(value, indent=2, sort_keys=True, default=plain) + "\n").encode()


def write(exp, results: dict, out: str, figures: bool = True, command: str | None = None) -> dict:
    """Write the artefacts; returns the content of results.json."""
    deterministic, timing = split_timing(results)
    commit = _commit(exp.program)
    deterministic["versions"] = _versions()
    deterministic["commit"] = commit
    deterministic["command"] = command or (
        f"ddmc experiment {os.path.relpath(exp.path)}" + (" --reduced" if exp.reduced else "")
    )
    # JSON's own float formatting: what is written is what a reader recomputes from
    deterministic = json.loads(_json(deterministic))
    atomic_write(os.path.join(out, "results.json"), _json(deterministic))
    atomic_write(os.path.join(out, "timing.json"), _json(timing))
    drawn: list[str] = []
    if figures:
        from ddm.runtime.experiment import figures as fig

        drawn = fig.draw(exp, deterministic, os.path.join(out, "figures"))
    atomic_write(
        os.path.join(out, "report.md"), markdown(exp, deterministic, timing, drawn, out).encode()
    )
    return deterministic


def _num(x, digits: int = 4) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(x)
    x = float(x)
    if not np.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def _interval(ci) -> str:
    return "—" if not ci else f"[{_num(ci[0])}, {_num(ci[1])}]"


def markdown(exp, results: dict, timing: dict, drawn: list[str], out: str) -> str:
    lines = [f"# Experiment: {exp.name}", ""]
    lines += [
        f"- program: `{os.path.relpath(exp.program, os.path.dirname(exp.path))}`",
        f"- seeds: {', '.join(map(str, exp.seeds))}"
        + (" (reduced configuration)" if exp.reduced else ""),
        f"- command: `{results['command']}`",
        f"- commit: `{results.get('commit') or 'unknown'}`",
        f"- statistics: {results['statistics']['resamples']} paired bootstrap resamples over "
        "test paths, "
        f"{results['statistics']['confidence']:.0%} intervals, Benjamini–Hochberg at "
        f"q = {results['statistics']['alpha']}, power for effect {results['statistics']['effect']}",
        "",
    ]
    for market, r in results["markets"].items():
        if "scorecard" in r:
            lines += _scorecard(exp, market, r, timing)
    for market, r in results["markets"].items():
        lines += _market(exp, market, r)
        how = timing.get(f"markets.{market}.training") or {}
        if how:
            lines += ["### Training", ""] + [f"- {g}: {w}" for g, w in how.items()] + [""]
    if drawn:
        lines += ["## Figures", ""]
        lines += [f"![{os.path.basename(p)}]({os.path.relpath(p, out)})" for p in drawn]
        lines.append("")
    lines += [
        "Definitions: docs/experiments.md. Every number above is formatted from results.json "
        "(timings from timing.json).",
        "",
    ]
    return "\n".join(lines)


def _scorecard(exp, market: str, r: dict, timing: dict) -> list[str]:
    card = dict(r["scorecard"])
    lat = timing.get(f"markets.{market}.scorecard.latency")
    if lat is not None:
        card = {**card, "latency": lat}
    from ddm.runtime.experiment.scorecard import ROWS

    lines = [
        f"## Scorecard ({exp.scorecard.get('method')}, market {market})",
        "",
        "| row | metric | threshold | value | interval | result | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ROWS:
        row = card.get(name)
        if row is None:
            continue
        verdict = (
            "not measured" if row["pass"] is None else ("**pass**" if row["pass"] else "**fail**")
        )
        note = row.get("note", "").replace("|", "/")
        lines.append(
            f"| {name} | {row['metric']} | {row['threshold']} | {_num(row['value'])} | "
            f"{_interval(row['interval'])} | {verdict} | {note} |"
        )
    kills = list(r.get("kill_criteria", [])) + list(
        timing.get(f"markets.{market}.kill_criteria", [])
    )
    if kills:
        lines += ["", "Kill criteria (research plan §8) that this experiment can evaluate:", ""]
        lines += ["| phase | criterion | measured | verdict | note |", "|---|---|---|---|---|"]
        for k in kills:
            lines.append(
                f"| {k['phase']} | {k['criterion']} | {_num(k['value'])} | "
                f"{'**killed**' if k['killed'] else 'survives'} | {k['note']} |"
            )
    lines.append("")
    return lines


def _market(exp, market: str, r: dict) -> list[str]:
    lines = [
        f"## Market: {market}",
        "",
        f"Data: `{json.dumps(r['data'])}`; {r['n_test']} test paths, the same for every method.",
        "",
    ]
    names = [n for n in exp.names if n in r["metrics"]]  # the file's order
    metrics = [m.name for m in exp.metrics]
    lines += ["### Metrics (mean over seeds ± sd over seeds)", ""]
    lines += [
        "| method | "
        + " | ".join(
            f"{m} ({next(x.better for x in exp.metrics if x.name == m)} is better)" for m in metrics
        )
        + " |"
    ]
    lines += ["|---|" + "---|" * len(metrics)]
    for n in names:
        cells = []
        for m in metrics:
            v = r["metrics"][n][m]
            cells.append(
                _num(v["value"]) + (f" ± {_num(v['seed_sd'], 2)}" if "seed_sd" in v else "")
            )
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines.append("")
    if r["comparisons"]:
        lines += [
            "### Comparisons (Δ > 0: the method is better; g > 0: its per-path P&L is higher)",
            "",
            "| method | vs | metric | Δ | interval | Hedges' g | g interval | p | p (BH) "
            "| significant | power at effect |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in r["comparisons"]:
            lines.append(
                f"| {c['method']} | {c['against']} | {c['metric']} | {_num(c['delta'])} | "
                f"{_interval(c['ci'])} | {_num(c.get('hedges_g'))} | "
                f"{_interval(c.get('hedges_g_ci'))} | {_num(c['p_value'], 3)} | "
                f"{_num(c['p_adjusted'], 3)} | {_num(c['significant'])} | "
                f"{_num(c['power'], 3)} |"
            )
        hyp = [c for c in r["comparisons"] if "within" in c]
        if hyp:
            lines += [
                "",
                "Hypotheses — the method is at most `within` worse than the reference:",
                "",
                "| method | vs | metric | worse by | interval | within | result |",
                "|---|---|---|---|---|---|---|",
            ]
            for c in hyp:
                lines.append(
                    f"| {c['method']} | {c['against']} | {c['metric']} | {_num(-c['delta'])} | "
                    f"{_interval([-c['ci'][1], -c['ci'][0]])} | {_num(c['within'])} | "
                    f"{'**holds**' if c['holds'] else '**fails**'} |"
                )
        first = r["comparisons"][0]
        lines += [
            "",
            f"Power: {first['paths']} paired paths; {first['paths_for_power']} reach "
            f"{exp.statistics['power']:.0%} power at effect {exp.statistics['effect']}.",
            "",
        ]
    if "regimes" in r:
        reg = r["regimes"]
        lines += [
            "### Volatility regimes ("
            + ", ".join(f"{a}: {b} paths" for a, b in zip(reg["regimes"], reg["paths"]))
            + ")",
            "",
        ]
        lines += [
            "| method | " + " | ".join(reg["regimes"]) + " | conditional Sharpe |",
            "|---|" + "---|" * 5,
        ]
        for n in names:
            row = reg[n]
            lines.append(
                f"| {n} | "
                + " | ".join(_num(x) for x in row["by_regime"])
                + f" | {_num(row['conditional_sharpe'])} |"
            )
        lines.append("")
    land = r.get("landscape") or {}
    if land:
        lines += [
            "### Landscape over seeds (docs/statistics.md § 8)",
            "",
            "| training group | final loss variance | consistency sd / abs(mean) "
            "| param angle (rad) | Fisher–Rao distance | gradient variance (median over seeds) |",
            "|---|---|---|---|---|---|",
        ]
        for gid, x in land.items():
            angle = (
                f"{_num(x['param_angle_mean'])} ± {_num(x['param_angle_sd'], 2)}"
                if "param_angle_mean" in x
                else "—"
            )
            fr = (
                f"{_num(x['fisher_rao_mean'])} ± {_num(x['fisher_rao_sd'], 2)}"
                if "fisher_rao_mean" in x
                else "—"
            )
            lines.append(
                f"| {gid} | {_num(x.get('loss_variance'))} | "
                f"{_num(x.get('convergence_consistency'))} | {angle} | {fr} | "
                f"{_num(float(np.median(x['gradient_variance'])))} |"
            )
        lines.append("")
    notes = []
    for name, info in r.get("baselines", {}).items():
        if "computed_risk" in info:
            notes.append(
                f"- {name}: the DP's computed optimum ρ* = {_num(info['computed_risk'], 5)}; "
                f"its policy simulated on the test paths: {_num(info['simulated_risk'], 5)} "
                f"± {_num(info['simulated_se'], 2)} "
                f"(z = {_num(info['z'], 2)})"
            )
        for k, v in info.items():
            if k in ("note", "budget", "predictor", "best"):
                notes.append(f"- {name} {k}: {v}")
    if notes:
        lines += ["### Baselines", ""] + notes + [""]
    return lines
