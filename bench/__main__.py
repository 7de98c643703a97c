"""``python -m ddm.bench [--quick] [--only NAME]``: run ddm's benchmarks, print a table and
write ``bench/results/latest.json`` (figures + machine). See ``bench/README.md``. With ``--only``
the other benchmarks' earlier results in that file are kept (each result has its own timestamp).

Targets are reported, not asserted. The exit status is 1 only when a correctness check inside a
benchmark fails (the ddm and hand-written losses disagree, or a declarative node's solution is
not the exact one), 2 on bad usage.
"""

from __future__ import annotations

# ddm sizes XLA's CPU thread pool (NPROC) before JAX starts; do the same before anything here
# touches JAX, so the benchmarks run in the configuration ddm's users get.
from ddm.library.xla_env import protect

protect()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from ddm.bench import (  # noqa: E402
    argmin,
    front_end,
    latency,
    pfhedge_step,
    simulator,
    train_step,
)

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "latest.json")
GROUPS = {
    "front_end": front_end,
    "train_step": train_step,
    "argmin": argmin,
    "simulator": simulator,
    "deep_hedge": pfhedge_step,
    "latency": latency,
}


def _names() -> list[str]:
    out = []
    for group, module in GROUPS.items():
        out.append(group)
        for name in module.NAMES:
            out += [name, f"{group}.{name}"]
    return out


def machine() -> dict:
    import jax
    from jaxlib.version import __version__ as jaxlib_version  # jaxlib does not re-export it

    dev = jax.devices()[0]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib_version,
        "device": {"platform": dev.platform, "kind": dev.device_kind, "count": jax.device_count()},
        "NPROC": os.environ.get("NPROC"),
        "loadavg_at_start": load,
    }


def _git() -> dict | None:
    root = os.path.dirname(HERE)
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


# --- the table ---------------------------------------------------------------------------------


def _t(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def row(r: dict) -> tuple[str, str, str, str, str, str]:
    """(benchmark, measured, reference, ratio, target, status)"""
    name = r["name"]
    if name.startswith("argmin."):
        return argmin.row(r)
    if name.startswith("simulator."):
        return simulator.row(r)
    if name.startswith("deep_hedge."):
        return pfhedge_step.row(r)
    if name.startswith("latency."):
        return latency.row(r)
    ok = "[green]ok[/]" if r.get("meets_target") else "[yellow]over[/]"
    if name.startswith("train_step."):
        check = (
            "[green]loss ok[/]"
            if r["loss_agrees"]
            else f"[red]LOSS MISMATCH {r['loss_rel_diff']:.1e}[/]"
        )
        return (
            name,
            f"{_t(r['ddm_step_s'])}/step",
            f"{_t(r['hand_step_s'])}/step (hand)",
            f"{r['ratio']:.3f} (A/A {r['aa_ratio']:.3f})",
            f"≤ {r['target_ratio']}",
            f"{ok}, {check}",
        )
    if name == "front_end.compile_500":
        return (
            name,
            _t(r["seconds"]),
            "—",
            f"{r['ratio']:.2f} × target",
            f"< {r['target_s']} s",
            ok,
        )
    if name == "front_end.trace_500":
        return (name, _t(r["seconds"]), "—", "—", "—", "info")
    if name == "front_end.cold_start":
        return (
            name,
            _t(r["seconds"]),
            f"{_t(r['python_pass_s'])} (python -c pass)",
            f"{r['ratio_to_python']:.1f}× python",
            f"< {r['target_s']} s",
            ok,
        )
    return (name, "", "", "", "", "")


def notes(r: dict) -> str | None:
    name = r["name"]
    if name.startswith("argmin."):
        return argmin.notes(r)
    if name.startswith("simulator."):
        return simulator.notes(r)
    if name.startswith("deep_hedge."):
        return pfhedge_step.notes(r)
    if name.startswith("latency."):
        return latency.notes(r)
    if name.startswith("train_step."):
        return (
            f"{name}: {r['program']}, batch {r['batch']}; ratio = median ddm / median hand "
            f"over {r['repeats']} blocks of {r['steps_per_repeat']} steps (median of the "
            f"paired block ratios {r['ratio_paired_median']:.3f}, ratio of minima "
            f"{r['ratio_of_minima']:.3f}; A/A = a second jit of the hand step / the first: "
            f"the noise floor); loss ddm {r['loss_ddm']:.7g} vs hand {r['loss_hand']:.7g} "
            f"(rel. diff {r['loss_rel_diff']:.1e}, grads {r['grad_max_rel_diff']:.1e}); "
            f"jaxpr eqns ddm {r['jaxpr_eqns']['ddm']} / hand {r['jaxpr_eqns']['hand']}"
        )
    if name == "front_end.compile_500":
        return (
            f"{name}: parse + resolve + check + lower of a generated program with "
            f"{r['nodes']} nodes ({r['ir_values']} IR values); front_end alone "
            f"{_t(r['front_end_s'])}, lower alone {_t(r['lower_s'])}"
        )
    if name == "front_end.trace_500":
        return (
            f"{name}: jax.make_jaxpr of the same program's loss (batch {r['batch']}, "
            f"{r['jaxpr_top_level_eqns']} top-level eqns); no target"
        )
    if name == "front_end.cold_start":
        return (
            f"{name}: fresh `{r['command']}` processes; {r['ratio']:.2f} × the "
            f"{r['target_s']} s target"
        )
    return None


def print_table(results: list[dict], meta: dict, console) -> None:
    from rich.console import JustifyMethod
    from rich.table import Table

    m = meta["machine"]
    title = (
        f"ddm benchmarks{' (--quick)' if meta['quick'] else ''}: {m['cpu_count']} CPUs, "
        f"{m['device']['platform']} ({m['device']['kind']}), jax {m['jax']}"
    )
    table = Table(title=title)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("benchmark", "left"),
        ("median", "right"),
        ("reference", "right"),
        ("ratio", "right"),
        ("target", "right"),
        ("status", "left"),
    )
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=col != "status")
    for r in results:
        table.add_row(*row(r))
    console.print(table)
    for r in results:
        text = notes(r)
        if text:
            console.print(f"[dim]• {text}[/]", highlight=False)
    argmin.print_details([r for r in results if r["name"].startswith("argmin.")], console)


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ddm.bench", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer and shorter repeats (a smoke test; figures are noisier)",
    )
    p.add_argument(
        "--only",
        metavar="NAME",
        choices=_names(),
        help=f"run one group or benchmark: {', '.join(_names())}",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        default=RESULTS,
        help="where to write the JSON (default bench/results/latest.json)",
    )
    args = p.parse_args(argv)

    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=130)
    err = Console(stderr=True)

    started = time.perf_counter()
    meta = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m ddm.bench", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "only": args.only,
        "git": _git(),
        "machine": machine(),
    }
    results: list[dict] = []
    for group, module in GROUPS.items():
        if args.only is None or args.only == group:
            sub = None
        else:
            matches = [n for n in module.NAMES if args.only in (n, f"{group}.{n}")]
            if not matches:
                continue
            sub = matches[0]
        label = group if sub is None else f"{group}.{sub}"
        err.print(f"[dim]running {label}{' (quick)' if args.quick else ''} …[/]")
        t0 = time.perf_counter()
        results += module.run(quick=args.quick, only=sub)
        err.print(f"[dim]  {label} took {time.perf_counter() - t0:.1f} s[/]")
    try:
        meta["machine"]["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass
    meta["duration_s"] = round(time.perf_counter() - started, 2)

    print_table(results, meta, console)
    for r in results:
        r["generated"], r["quick"] = meta["generated"], args.quick
    out = os.path.abspath(args.out)
    kept = _kept(out, results) if args.only else []
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({**meta, "results": _ordered(kept + results)}, fh, indent=2, default=_json)
        fh.write("\n")
    os.replace(tmp, out)
    rel = os.path.relpath(out)
    console.print(
        f"wrote {out if rel.startswith('..') else rel}"
        f"{f' (kept {len(kept)} earlier results)' if kept else ''}; "
        f"{meta['duration_s']:.0f} s in all",
        highlight=False,
    )

    bad = [r["name"] for r in results if r.get("loss_agrees") is False]
    if bad:
        err.print(
            f"[red]correctness check failed: {', '.join(bad)} (ddm and hand-written losses "
            f"differ by more than {train_step.LOSS_RTOL:g} relative)[/]"
        )
    wrong = [r["name"] for r in results if r.get("correct") is False]
    if wrong:
        err.print(
            f"[red]correctness check failed: {', '.join(wrong)} (ddm's solution differs "
            f"from the exact one by more than {argmin.SOLUTION_ATOL:g}, or an instance "
            f"did not converge, or the node failed)[/]"
        )
    if bad or wrong:
        return 1
    return 0


def _kept(path: str, fresh: list[dict]) -> list[dict]:
    """With --only: the other benchmarks' results already in ``path`` (each carries its own
    ``generated`` time), so a partial run does not wipe the full figures."""
    try:
        with open(path) as fh:
            old = json.load(fh).get("results", [])
    except (OSError, ValueError, AttributeError):
        return []
    names = {r["name"] for r in fresh}
    return [r for r in old if isinstance(r, dict) and r.get("name") not in names]


def _ordered(results: list[dict]) -> list[dict]:
    order = [
        f"{g}.{n}"
        for g in ("front_end", "train_step", "argmin", "simulator")
        for n in GROUPS[g].NAMES
    ]
    return sorted(
        results, key=lambda r: order.index(r["name"]) if r["name"] in order else len(order)
    )


def _json(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:
        pass
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


if __name__ == "__main__":
    sys.exit(main())
