"""``ddmc``: the command line. The only place that catches :class:`DdmError` and prints it.

Exit codes: 0 success; 1 a diagnostic in the user's program, data or config; 2 bad usage.
``ddmc check`` and ``ddmc fmt`` never import JAX (cold start matters).
"""

from __future__ import annotations

import argparse
import os
import sys

from ddm.cli import terminal
from ddm.dsl.diagnostics import DdmError, format_message

EXIT_OK, EXIT_USER, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ddmc",
        description="Differentiable Decision Makers: check, "
        "compile, run and format .ddm pipelines.",
    )
    p.add_argument("--version", action="version", version=f"ddmc {_version()}")
    p.add_argument(
        "--color",
        "--colour",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour diagnostics: auto (a terminal, unless NO_COLOR is set), always, never",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser(
        "check",
        help="parse and type-check; print nodes, kinds and shapes",
        description="Parse and type-check each PATH without running it (a folder: every "
        ".ddm file under it). For a file that checks, print a table of its inputs, "
        "params, nodes, loss and metrics with kinds and types; for one that does not, "
        "FILE:LINE:COL: error: …. Exit 1 if any file failed.",
    )
    c.add_argument("paths", nargs="+", metavar="PATH", help=_PATH_HELP)
    c.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    c.add_argument(
        "--variant",
        metavar="NAME",
        help="with an experiment file (EXPERIMENT.yaml): print what method NAME's variant "
        "changes in the compiled graph",
    )

    k = sub.add_parser(
        "compile",
        help="compile to JAX; --emit a stage, or --run the program",
        description="Compile FILE to a jitted JAX function. --emit shows a stage; "
        "--run trains the program's params on its data (run section, --config, "
        "--set) and writes metrics.json, timing.json, params.npz and log.jsonl "
        "to --out.",
    )
    k.add_argument("file", metavar="FILE", help="the .ddm program")
    k.add_argument("--emit", choices=("ir", "jaxpr", "hlo"), help="print this stage and stop")
    k.add_argument("--run", action="store_true", help="train on the program's data")
    _run_options(k)
    k.add_argument(
        "--dim",
        metavar="NAME=SIZE",
        action="append",
        default=[],
        help="size of a symbolic dim for --emit jaxpr|hlo (repeatable)",
    )

    t = sub.add_parser(
        "train",
        help="the same as compile --run",
        description="Train FILE: ddmc compile FILE --run with the same options.",
    )
    t.add_argument("file", metavar="FILE", help="the .ddm program")
    _run_options(t)
    t.set_defaults(run=True, emit=None, dim=[])

    r = sub.add_parser(
        "render",
        help="draw the program's pipeline (DOT, SVG, PNG, PDF)",
        description="Draw FILE as the seed article draws pipelines. By default (--detail "
        "nodes) the named things only: inputs, params, nodes, Φ-rules and the loss, each "
        "labelled with its name, its expression as written and its type, an edge from each "
        "named value an expression reads, an argmin's constraints as labelled edges into it. "
        "--detail ops draws every IR value, edges labelled with tensor names and types, "
        "argmin, scan and fn bodies as clusters. Prints DOT, or writes -o PATH (.dot, .svg, "
        ".png, .pdf; all but DOT need graphviz's dot).",
    )
    r.add_argument("file", metavar="FILE", help="the .ddm program")
    r.add_argument("-o", "--out", metavar="PATH", help="write here (format from the extension)")
    r.add_argument("--format", choices=("dot", "svg", "png", "pdf"), help="override the extension")
    r.add_argument(
        "--detail",
        choices=("nodes", "ops"),
        default="nodes",
        help="nodes: the named things (default); ops: every IR value",
    )
    r.add_argument(
        "--metrics", action="store_true", help="draw the metrics too (--detail nodes; ops has them)"
    )
    r.add_argument(
        "--backward", action="store_true", help="draw the backward (adjoint) edges only, dashed"
    )
    r.add_argument("--both", action="store_true", help="forward and backward edges")
    r.add_argument(
        "--grads",
        metavar="RUN_DIR",
        help="label and colour backward edges with "
        "the gradient norms a run measured (RUN_DIR/grad_norms.json); implies --both "
        "unless --backward",
    )
    r.add_argument(
        "--rankdir",
        choices=("LR", "TB"),
        help="layout direction (default: TB for --detail nodes, LR for ops)",
    )

    e = sub.add_parser(
        "eval",
        help="score trained params on data: the loss and every metric",
        description="Evaluate FILE's loss and metrics at the params of a run (RUN_DIR or "
        "its params.npz, checked against FILE's params) on the program's data (train and "
        "test splits), or on every sample of --data PATH (.csv, .npz, .parquet, read with "
        "the default mapping of inputs to columns or arrays).",
    )
    e.add_argument("file", metavar="FILE", help="the .ddm program")
    e.add_argument("--params", metavar="RUN_DIR", required=True, help="a run folder or params.npz")
    e.add_argument("--data", metavar="PATH", help="a data file to score on (all its samples)")
    e.add_argument("--config", metavar="RUN.yaml", help="YAML run config (its data section)")
    e.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a setting of the program's data source (repeatable): data.path=new.csv",
    )
    e.add_argument("--x64", action="store_true", help="compute in float64")
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument(
        "--chunk",
        metavar="N",
        type=_positive,
        help="consume the samples N at a time, accumulating the metrics (and generate them N at "
        "a time where the source can: path_ids): memory independent of the number of samples",
    )
    e.add_argument(
        "--split",
        choices=("train", "test", "both"),
        default="both",
        help="which of the program's splits to score (default both)",
    )

    x = sub.add_parser(
        "export",
        help="export the trained decision for deployment (jax.export)",
        description="Serialise FILE's decision function — its outputs, guard checks and "
        "solver statuses, with the params of RUN_DIR baked in — with jax.export into OUT "
        "(decision.jaxexport + manifest.json). Loading it needs JAX only, not ddm "
        "(docs/export.md). The batch axis stays symbolic; other dims are fixed: those the "
        "params were trained with, or --dim.",
    )
    x.add_argument("file", metavar="FILE", help="the .ddm program")
    x.add_argument("--params", metavar="RUN_DIR", required=True, help="a run folder or params.npz")
    x.add_argument("-o", "--out", metavar="OUT", required=True, help="the folder to write")
    x.add_argument(
        "--dim", metavar="NAME=SIZE", action="append", default=[], help="fix a dim (repeatable)"
    )
    x.add_argument(
        "--platforms",
        metavar="LIST",
        help="comma-separated platforms to lower for (cpu, cuda, rocm, tpu); default: this "
        "machine's",
    )
    x.add_argument("--x64", action="store_true", help="compute in float64")

    pl = sub.add_parser(
        "plot",
        help="draw a run's learning curves, gradient norms and P&L distribution",
        description="Draw RUN_DIR's pictures from its log.jsonl, metrics.json and pnl.npz "
        "(headless): learning.png (train and test loss and metrics over the steps), "
        "gradients.png (gradient norms), pnl.png (P&L per test sample against the "
        "baselines the program reports).",
    )
    pl.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (--out of a run)")

    ex = sub.add_parser(
        "experiment",
        help="train, evaluate and compare methods and baselines: paired statistics, scorecard",
        description="Run EXPERIMENT.yaml (docs/experiments.md): every learned method "
        "(a variant of the program) for every seed, every baseline, all on the same test "
        "paths; write OUT/results.json (every number; the same seeds give the same bits), "
        "OUT/timing.json, OUT/report.md with the scorecard, and OUT/figures/.",
    )
    ex.add_argument("file", metavar="EXPERIMENT.yaml", help="the experiment file")
    ex.add_argument("--out", metavar="DIR", help="output folder (default: runs/experiments/NAME)")
    ex.add_argument(
        "--resume", action="store_true", help="continue an interrupted experiment in --out"
    )
    ex.add_argument("--reduced", action="store_true", help="run the file's reduced configuration")
    ex.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    ex.add_argument(
        "--devices",
        metavar="N|all",
        type=_devices,
        help="spread each method's seeds over N devices, or all, and the methods side by side "
        "when there are twice as many devices as seeds (on a CPU host ddmc makes N devices of it)",
    )
    ex.add_argument(
        "--no-cache", action="store_true", help="do not use the persistent compile cache"
    )

    so = sub.add_parser(
        "sources",
        help="list the data sources: inputs, settings, defaults",
        description="Every data source a run section can name, with what it provides, "
        "its settings and their defaults and ranges.",
    )
    so.add_argument("name", nargs="?", help="show this source only")

    f = sub.add_parser(
        "fmt",
        help="format .ddm files canonically (print, --check or -w)",
        description="Print a file in canonical form (comments kept, lines wrapped at "
        "100 columns); with --check, show what would change as a diff and exit 1 if "
        "any PATH is not canonical; with -w, rewrite each file in place. A folder "
        "stands for every .ddm file under it.",
    )
    f.add_argument("paths", nargs="+", metavar="PATH", help=_PATH_HELP)
    mode = f.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="print a diff of what -w would change; exit 1 if any"
    )
    mode.add_argument("-w", "--write", action="store_true", help="rewrite the files in place")
    return p


_PATH_HELP = (
    "a .ddm file, or a folder: every .ddm file under it, in sorted order (hidden files "
    "and folders skipped)"
)


def _run_options(p) -> None:
    """The options of a training run, shared by ``compile --run`` and ``train``."""
    p.add_argument(
        "--config", metavar="RUN.yaml", help="YAML run config (overrides the run section)"
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one setting (repeatable): steps=100, optimizer.lr=3e-4, data.path=mine.csv",
    )
    p.add_argument(
        "--out", metavar="DIR", help="where the run writes its artefacts (default runs/NAME)"
    )
    p.add_argument("--x64", action="store_true", help="compute in float64")
    p.add_argument(
        "--devices",
        metavar="N|all",
        type=_devices,
        help="split each batch over N devices, or all (the run setting devices; on a CPU host "
        "ddmc makes N devices of it)",
    )
    d = p.add_argument_group(
        "several processes (jax.distributed; process 0 writes, every process computes)"
    )
    d.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address and a free port")
    d.add_argument("--num-processes", metavar="P", type=int, help="how many processes run")
    d.add_argument("--process-id", metavar="I", type=int, help="this process's index, 0 … P-1")
    d.add_argument(
        "--distributed",
        action="store_true",
        help="join the processes the cluster started (SLURM, Open MPI, Kubernetes, or "
        "JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID), detected by JAX",
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run whose checkpoint is in DIR with its own settings (implies "
        "--run; writes there; --set steps=N may extend it)",
    )
    p.add_argument(
        "--no-plots",
        action="store_true",
        help="do not draw learning.png, gradients.png, pnl.png into the run folder",
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="do not use the persistent XLA compilation cache (~/.cache/ddm/xla)",
    )


def _start_devices(args) -> int:
    """Before anything starts JAX: the devices to split the batch over (on a CPU host, made
    from it) and the processes to join; 0, or the exit code of a mistake."""
    from ddm.runtime import devices

    several = getattr(args, "distributed", False) or any(
        getattr(args, k, None) is not None for k in ("coordinator", "num_processes", "process_id")
    )
    local = args.devices if isinstance(args.devices, int) else None
    if several:
        p = args.num_processes
        if local is not None and not p:
            print(
                f"ddmc: error: --devices {local} counts the devices of every process, and the "
                "number of processes is not given: add --num-processes, or pass --devices all",
                file=sys.stderr,
            )
            return EXIT_USER
        if local is not None and p:
            if local % p:
                print(
                    f"ddmc: error: --devices {local} over --num-processes {p}: every process "
                    "needs as many devices; choose a multiple of the processes",
                    file=sys.stderr,
                )
                return EXIT_USER
            local //= p
        try:
            devices.initialize(args.coordinator, p, args.process_id, local)
        except (RuntimeError, ValueError) as err:
            print(f"ddmc: error: could not join the processes: {err}", file=sys.stderr)
            return EXIT_USER
        if devices.process()[0] > 0:  # process 0 reports; the others compute
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # also what XLA's C++ prints
    elif local is not None:
        devices.request_cpu_devices(local)
    if not hasattr(args, "set"):  # ddmc experiment: run_experiment(devices=…)
        return 0
    if args.devices is not None:
        args.set.append(f"devices={args.devices}")
    elif several:
        args.set.append("devices=all")
    return 0


def _positive(text: str, what: str = "a number") -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected {what} >= 1, got {text!r}")
    return n


def _devices(text: str):
    return text if text == "all" else _positive(text, "all or a number of devices")


def _version() -> str:
    from ddm import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    args = _parser().parse_args(argv)
    terminal.set_mode(args.color)
    if hasattr(args, "devices"):
        failed = _start_devices(args)
        if failed:
            return failed
    try:
        return {
            "check": cmd_check,
            "compile": cmd_compile,
            "train": cmd_compile,
            "fmt": cmd_fmt,
            "render": cmd_render,
            "eval": cmd_eval,
            "export": cmd_export,
            "plot": cmd_plot,
            "sources": cmd_sources,
            "experiment": cmd_experiment,
        }[args.command](args)
    except DdmError as err:
        print(terminal.paint(str(err)), file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt as err:
        if str(err):  # a training run that saved its checkpoint says where
            print(f"ddmc: {err}", file=sys.stderr)
            return 130
        print("ddmc: interrupted", file=sys.stderr)
        return 130


def _warn(graph, sources) -> None:
    for w in graph.warnings:
        text = format_message(
            "warning", w.span, w.message, sources.texts.get(w.span.file), hint=w.hint
        )
        print(terminal.paint(text), file=sys.stderr)


def cmd_check(args) -> int:
    from ddm.compiler.driver import front_end_file

    experiments = [p for p in args.paths if p.endswith((".yaml", ".yml"))]
    if experiments or args.variant:
        return _check_experiment(args, experiments)
    files = _ddm_files(args.paths)
    failed = 0
    for path in files:
        try:
            graph, sources = front_end_file(path)
        except DdmError as err:
            print(terminal.paint(str(err)), file=sys.stderr)
            failed += 1
            continue
        _warn(graph, sources)
        if not args.quiet:
            print(summary_table(graph) + ("\n" if len(files) > 1 else ""))
    if len(files) > 1 and (failed or not args.quiet):
        errors = f"{failed} with errors" if failed else "no errors"
        print(f"{len(files)} files checked, {errors}", file=sys.stderr)
    return EXIT_USER if failed else EXIT_OK


def _check_experiment(args, experiments: list[str]) -> int:
    """``ddmc check EXPERIMENT.yaml [--variant NAME]``: the file's methods and baselines, or
    what one method's variant changes in the compiled graph."""
    from ddm.compiler.driver import front_end_file
    from ddm.runtime.experiment import spec

    if len(experiments) != 1 or len(args.paths) != 1:
        print(
            "ddmc check: --variant takes exactly one experiment file (EXPERIMENT.yaml)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    exp = spec.load(experiments[0])
    graph, sources = front_end_file(exp.program)
    _warn(graph, sources)
    if args.variant is None:
        from ddm.runtime.experiment.run import validate
        from ddm.runtime.program import load

        # every market's and method's run settings, the variants, the baselines: as the run
        # checks them before it trains anything — and so for the reduced run (CI's)
        prog = load(exp.program, x64=exp.x64)
        validate(exp, prog)
        if exp.where is not None and ("reduced",) in exp.where.values:
            validate(spec.load(experiments[0], reduced=True), prog)
        if not args.quiet:
            print(
                f"{experiments[0]}: ok — program {os.path.relpath(exp.program)}, "
                f"seeds {list(exp.seeds)}"
            )
            for m in exp.methods:
                print(
                    f"  method {m.name}: output {m.output}"
                    + (f", variant {dict(m.variant)}" if m.variant else "")
                )
            for b in exp.baselines:
                print(f"  baseline {b.name}: {b.kind}" + (f" {dict(b.args)}" if b.args else ""))
        return EXIT_OK
    from ddm.compiler import variants

    names = [m.name for m in exp.methods]
    if args.variant not in names:
        import difflib

        close = difflib.get_close_matches(args.variant, names, n=1)
        print(
            f"{experiments[0]}: error: no method '{args.variant}'"
            + (f"; did you mean '{close[0]}'?" if close else f"; methods: {', '.join(names)}"),
            file=sys.stderr,
        )
        return EXIT_USER
    method = next(m for m in exp.methods if m.name == args.variant)
    v = variants.variant_from_mapping(method.name, dict(method.variant))
    try:
        lines = variants.describe(graph, v)
    except DdmError as err:
        raise sources.locate(err) from None
    changes = [x for x in lines if not x.startswith("no change")]
    print(
        f"{method.name}: {len(changes) or 'no'} change{'s' if len(changes) != 1 else ''} "
        f"to {os.path.basename(graph.file)}"
    )
    for line in lines:
        print(f"  {line}")
    if method.settings:
        print(f"  run settings: {dict(method.settings)}")
    return EXIT_OK


def cmd_experiment(args) -> int:
    from ddm.runtime.experiment import report, spec
    from ddm.runtime.experiment.run import run_experiment

    exp = spec.load(args.file, reduced=args.reduced)
    from ddm.runtime.experiment.run import default_out

    out = args.out or default_out(exp)
    _cache(args)
    console = terminal.console(stderr=True)
    results = run_experiment(
        exp, out, resume=args.resume, console=console, devices=args.devices or 1
    )
    command = "ddmc experiment " + args.file + (" --reduced" if args.reduced else "")
    report.write(exp, results, out, figures=not args.no_figures, command=command)
    print(
        f"{exp.name}: results in {out}/ (report.md, results.json, timing.json"
        + (")" if args.no_figures else ", figures/)")
    )
    return EXIT_OK


def _ddm_files(paths: list[str]) -> list[str]:
    """The files that ``PATH …`` names, each once, in order: a file as given (a missing one
    is an error), a folder as every ``*.ddm`` file under it (recursively, sorted, skipping
    names that start with '.'; none is an error)."""
    from ddm.dsl.diagnostics import InputDiagnostic
    from ddm.dsl.span import Span

    out: dict[str, None] = {}  # an ordered set
    for path in paths:
        where = Span(path, 0, 0, 0, 0)
        if not os.path.exists(path):
            raise InputDiagnostic(where, f"no such file: '{path}'")
        if not os.path.isdir(path):
            out.setdefault(path, None)
            continue
        found = []
        for folder, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [
                os.path.join(folder, n)
                for n in names
                if n.endswith(".ddm") and not n.startswith(".")
            ]
        if not found:
            raise InputDiagnostic(where, f"no .ddm files in the folder '{path}'")
        for f in sorted(found):
            out.setdefault(f, None)
    return list(out)


def summary_table(graph) -> str:
    rows = [("name", "kind", "type", "where")]
    for i in graph.inputs:
        rows.append((i.name, "input", str(i.type), _at(i.span)))
    for p in graph.params:
        kind = "param (positive)" if p.positive else "param"
        rows.append((p.name, kind, str(p.type), _at(p.span)))
    for name, vid in graph.nodes.items():
        v = graph.values[vid]
        rows.append((name, v.kind, str(v.type), _at(v.span)))
    for f in graph.fns:
        rows.append((f.name, "fn", f.signature, _at(f.span)))
    if graph.loss is not None:
        v = graph.values[graph.loss]
        rows.append(("loss", "loss", str(v.type), _at(v.span)))
    for name, vid in graph.losses:
        v = graph.values[vid]
        rows.append((f"loss {name}", "loss (--set loss=" + name + ")", str(v.type), _at(v.span)))
    for name, vid in graph.metrics:
        v = graph.values[vid]
        rows.append((name, "metric", str(v.type), _at(v.span)))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    special = [v for v in graph.values if v.op in ("argmin", "scan")]
    if special:
        lines.append("")
        inside = {i: s.name for s in special if s.op == "scan" for i in range(*s.attr("scan").body)}
        for v in special:
            label = v.name or (
                f"(in scan {inside[v.id] or 'expression'})" if v.id in inside else "(unnamed)"
            )
            what = v.attr("problem") if v.op == "argmin" else v.attr("scan")
            lines.append(f"{label} ({_at(v.span)}): {what.describe()}")
    outs = ", ".join(n for n, _ in graph.outputs) or "none"
    lines.append(
        f"\n{os.path.basename(graph.file)}: ok — {len(graph.values)} IR values, outputs: {outs}"
    )
    return "\n".join(lines)


def _at(span) -> str:
    return f"{span.line}:{span.column}"


def _config(graph, sources, args):
    from ddm.runtime.config import RunConfig

    cfg = RunConfig.defaults()
    cfg.apply_run_section(graph.run, sources.texts.get(graph.file, ""))
    if args.config:
        cfg.apply_yaml(args.config)
    for i, assignment in enumerate(args.set, 1):
        cfg.apply_set(assignment, i)
    return cfg


def cmd_compile(args) -> int:
    from ddm.compiler.driver import front_end_file

    graph, sources = front_end_file(args.file)
    _warn(graph, sources)
    dims = _dims(args, graph)
    if args.emit == "ir":
        from ddm.compiler.ir import format_ir

        print(format_ir(graph))
        return EXIT_OK
    cfg = _resume_config(graph, sources, args) if args.resume else _config(graph, sources, args)
    # with the compilation cache, the cache of traced programs (DDM_NO_TRACE_CACHE=1: not it)
    traces = _cache(args) and not os.environ.get("DDM_NO_TRACE_CACHE")
    x64 = args.x64 or bool(cfg.values.get("x64") is True)
    from ddm.runtime.program import Program

    prog = Program.compile(graph, sources, x64=x64)
    if args.emit in ("jaxpr", "hlo"):
        if isinstance(cfg.values.get("loss"), str) and cfg.values["loss"]:
            from ddm.runtime.data import SOURCES

            cfg.validate(SOURCES, tuple(n for n, _ in graph.losses))
            prog = prog.with_loss(cfg.values["loss"])
        from ddm.cli.emit import emit

        print(emit(prog, args.emit, dims, cfg.values.get("batch", 256)))
        return EXIT_OK
    if not args.run and not args.resume:
        print(
            f"{os.path.basename(graph.file)}: compiled — {len(graph.values)} IR values; use "
            "--run to train, --emit ir|jaxpr|hlo to inspect"
        )
        return EXIT_OK
    from ddm.runtime.data import SOURCES

    cfg.validate(SOURCES, tuple(n for n, _ in graph.losses))  # run() switches to a named loss
    from ddm.cli.report import print_report
    from ddm.runtime.train import run

    out = (
        args.resume
        or args.out
        or os.path.join("runs", os.path.splitext(os.path.basename(args.file))[0])
    )
    console = terminal.console()
    if cfg.values.get("compare_rules"):
        from ddm.cli.report import print_comparison
        from ddm.runtime.compare import run_both

        both = run_both(
            prog,
            cfg,
            out,
            console,
            resume=bool(args.resume),
            draw=not args.no_plots,
            traces=traces,
        )
        for name, result in both["runs"].items():
            console.rule(name)
            print_report(console, result)
        print_comparison(console, both["comparison"])
        _diagram(graph, sources, os.path.join(out, "phi_guided"), out, console)
        return EXIT_OK
    result = run(
        prog, cfg, out, console, resume=bool(args.resume), draw=not args.no_plots, traces=traces
    )
    print_report(console, result)
    if result.moved:  # trained, but not written where asked: say where, and fail the command
        print(terminal.paint(f"error: {result.moved}"), file=sys.stderr)
        return EXIT_USER
    return EXIT_OK


def _resume_config(graph, sources, args):
    """A resumed run's settings: those its checkpoint recorded, with only ``steps`` open to
    change (``--set steps=N`` extends the run); any other --set or --config that differs is
    refused, naming each setting that would change."""
    import copy

    from ddm.runtime import resume as resume_state
    from ddm.runtime.config import RunConfig
    from ddm.runtime.data import SOURCES
    from ddm.runtime.errors import ConfigDiagnostic

    saved = resume_state.saved_config(args.resume)
    if saved is None:  # no checkpoint (refused later, by name) or one from an older ddm
        return _config(graph, sources, args)
    cfg = RunConfig.defaults()
    cfg.values.update(copy.deepcopy(saved))
    cfg.texts[graph.file] = sources.texts.get(graph.file, "")
    if args.config:
        cfg.apply_yaml(args.config)
    for i, assignment in enumerate(args.set, 1):
        cfg.apply_set(assignment, i)
    cfg.validate(SOURCES, tuple(n for n, _ in graph.losses))
    changed = resume_state.differences(saved, cfg.values)
    if changed:
        raise ConfigDiagnostic(
            None,
            f"--resume {args.resume}: the run continues with the settings it was trained with; "
            "this call would change " + "; ".join(changed),
            hint="only steps may change (--set steps=N); for other settings start a new run "
            "with --out",
        )
    if cfg.values["steps"] < saved["steps"]:
        raise ConfigDiagnostic(
            None,
            f"--resume {args.resume}: steps may only be raised (the run was set to "
            f"{saved['steps']}, this call says {cfg.values['steps']})",
        )
    return cfg


def _cache(args) -> bool:
    """The persistent compilation cache, unless --no-cache or DDM_NO_CACHE: whether it is on."""
    if getattr(args, "no_cache", False) or os.environ.get("DDM_NO_CACHE"):
        return False
    from ddm.runtime import compile_cache

    return compile_cache.enable() is not None


def _diagram(graph, sources, run_dir: str, out: str, console) -> None:
    """The program's diagram, backward edges annotated with the run's gradient norms:
    OUT/diagram.svg, or OUT/diagram.dot where graphviz's dot is missing."""
    from ddm.runtime.diagram import measured
    from ddm.runtime.dot import DotMissing, render_file, to_dot
    from ddm.runtime.pipeline_view import pipeline

    grads = measured(graph, _run_grad_norms(graph, sources, run_dir))
    text = to_dot(pipeline(graph, sources.texts, "both", grads))
    path = os.path.join(out, "diagram.svg")
    try:
        render_file(text, path, None)
    except DotMissing:
        path = os.path.join(out, "diagram.dot")
        render_file(text, path, "dot")
    console.print(f"wrote {path} (backward edges: gradient norms of {run_dir})", highlight=False)


def _dims(args, graph) -> dict[str, int]:
    """``--dim NAME=SIZE``: checked against the program's dims; only --emit jaxpr|hlo uses
    them (a run binds its dims from the data)."""
    from ddm.runtime.config import dim_sizes
    from ddm.runtime.errors import ConfigDiagnostic

    dims = dim_sizes(args.dim, graph.dims)
    if dims and args.emit not in ("jaxpr", "hlo"):
        raise ConfigDiagnostic(
            None,
            "--dim sizes dims for --emit jaxpr|hlo only; a run binds them from its data",
            hint="drop --dim, or add --emit jaxpr",
        )
    return dims


def cmd_render(args) -> int:
    from ddm.compiler.driver import front_end_file
    from ddm.runtime.diagram import diagram, measured
    from ddm.runtime.dot import DotMissing, render_file, to_dot
    from ddm.runtime.pipeline_view import pipeline

    graph, sources = front_end_file(args.file)
    _warn(graph, sources)
    grads = None
    if args.grads:
        grads = measured(graph, _run_grad_norms(graph, sources, args.grads))
    show = (
        "backward" if args.backward else ("both" if args.both or grads is not None else "forward")
    )
    if args.detail == "ops":
        d = diagram(graph, show, grads, args.rankdir or "LR")
    else:
        d = pipeline(graph, sources.texts, show, grads, args.rankdir or "TB", args.metrics)
    text = to_dot(d)
    if not args.out:
        if args.format not in (None, "dot"):
            print(f"ddmc render: {args.format.upper()} needs -o PATH", file=sys.stderr)
            return EXIT_USAGE
        sys.stdout.write(text)
        return EXIT_OK
    try:
        fmt = render_file(text, args.out, args.format)
    except DotMissing as exc:
        print(f"ddmc render: {exc}", file=sys.stderr)
        return EXIT_USER
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"ddmc render: {exc}", file=sys.stderr)
        return EXIT_USAGE
    what = (
        f"{len(graph.values)} IR values"
        if args.detail == "ops"
        else f"{len(d.nodes)} named things of {len(graph.values)} IR values"
    )
    print(f"wrote {args.out} ({fmt}, {what})")
    return EXIT_OK


def _run_grad_norms(graph, sources, run_dir: str) -> dict:
    """RUN_DIR/grad_norms.json, measured now (and cached there) when it is missing or older
    than the run's params."""
    import json

    from ddm.runtime.errors import ConfigDiagnostic

    cache = os.path.join(run_dir, "grad_norms.json")
    params = os.path.join(run_dir, "params.npz")
    for need in (params, os.path.join(run_dir, "metrics.json")):
        if not os.path.exists(need):
            raise ConfigDiagnostic(
                None,
                f"--grads {run_dir}: no {os.path.basename(need)} there",
                hint="train first: ddmc compile FILE --run --out DIR, then "
                "ddmc render FILE --grads DIR",
            )
    if os.path.exists(cache) and os.path.getmtime(cache) >= os.path.getmtime(params):
        with open(cache, encoding="utf-8") as fh:
            return json.load(fh)
    from ddm.runtime.program import Program
    from ddm.runtime.train import grad_norms_of_run

    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
        x64 = bool(json.load(fh).get("config", {}).get("x64"))
    return grad_norms_of_run(Program.compile(graph, sources, x64=x64), run_dir)


def cmd_fmt(args) -> int:
    from ddm.dsl.format import format_source
    from ddm.dsl.parser import read_source

    files = _ddm_files(args.paths)
    if len(files) > 1 and not (args.check or args.write):
        print(
            f"ddmc fmt: {len(files)} files: add -w to rewrite them in place, or --check to "
            "see what would change",
            file=sys.stderr,
        )
        return EXIT_USAGE
    failed = changed = 0
    for path in files:
        text = None
        try:
            text = read_source(path)
            out = format_source(text, path)
            if args.write and out != text:
                _write_in_place(path, out)
        except DdmError as err:
            # a syntax error shows its line and caret, as ddmc check shows it
            print(
                terminal.paint(str(err if text is None else err.with_source(text))), file=sys.stderr
            )
            failed += 1
            continue
        except OSError as exc:
            print(f"{path}: error: cannot write: {exc.strerror or exc}", file=sys.stderr)
            failed += 1
            continue
        if not (args.check or args.write):
            sys.stdout.write(out)
        elif out != text:
            changed += 1
            if args.check:
                sys.stdout.write(_diff(text, out, path))
                print(f"{path}: not canonically formatted (run ddmc fmt -w)", file=sys.stderr)
            else:
                print(f"reformatted {path}", file=sys.stderr)
    if len(files) > 1:
        if args.check:
            what = f"{changed} not canonically formatted" if changed else "all canonical"
        else:
            what = f"{changed} reformatted"
        errors = f", {failed} with errors" if failed else ""
        print(f"{len(files)} files checked, {what}{errors}", file=sys.stderr)
    return EXIT_USER if failed or (args.check and changed) else EXIT_OK


def _diff(old: str, new: str, path: str) -> str:
    """A unified diff from ``old`` to ``new`` (``patch -p0`` applies it)."""
    import difflib

    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), path, path
    )
    # A last line without its newline is marked as diff marks it.
    return "".join(
        line if line.endswith("\n") else f"{line}\n\\ No newline at end of file\n" for line in lines
    )


def _write_in_place(path: str, text: str) -> None:
    """Replace the file's content by ``text`` atomically: a temporary file in the same folder,
    synced, given the file's permissions, renamed over it (through a symbolic link, the file
    it points to). The file is its old self or its whole new self, never a part."""
    import stat
    import tempfile

    target = os.path.realpath(path)
    mode = stat.S_IMODE(os.stat(target).st_mode)
    fd, tmp = tempfile.mkstemp(
        dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def cmd_eval(args) -> int:
    import json

    from ddm.compiler.driver import front_end_file

    graph, sources = front_end_file(args.file)
    _warn(graph, sources)
    cfg = _config(graph, sources, args)
    from ddm.runtime import api, params_io
    from ddm.runtime.program import Program

    _cache(args)
    prog = Program.compile(graph, sources, x64=args.x64 or bool(cfg.values.get("x64") is True))
    params = params_io.load_params(args.params, prog)
    if args.data and args.split != "both":
        print(
            "ddmc: error: --split picks a split of the program's data source; --data scores "
            "every sample of its file",
            file=sys.stderr,
        )
        return EXIT_USER
    if args.data:  # every sample of the file: nothing held out
        scores = {"all": api.evaluate_file(prog, params, args.data, cfg, chunk=args.chunk)}
    else:
        from ddm.runtime.data import SOURCES

        cfg.validate(SOURCES, tuple(n for n, _ in graph.losses))
        splits = ("train", "test") if args.split == "both" else (args.split,)
        scores = api.evaluate_config(prog, params, cfg, chunk=args.chunk, splits=splits)
    if args.json:
        print(json.dumps(scores, indent=2, sort_keys=True))
        return EXIT_OK
    from rich.table import Table

    splits = list(scores)
    table = Table(title=f"{os.path.basename(graph.file)} at {args.params}", title_justify="left")
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for name in sorted({k for v in scores.values() for k in v}):
        table.add_row(name, *(f"{scores[sp].get(name, float('nan')):.6g}" for sp in splits))
    terminal.console().print(table)
    return EXIT_OK


def cmd_export(args) -> int:
    from ddm.compiler.driver import front_end_file
    from ddm.runtime.config import dim_sizes

    graph, sources = front_end_file(args.file)
    _warn(graph, sources)
    given = dim_sizes(args.dim, graph.dims)
    from ddm.runtime import export, params_io
    from ddm.runtime.program import Program

    _cache(args)
    prog = Program.compile(graph, sources, x64=args.x64)
    params = params_io.load_params(args.params, prog)
    dims = {**params_io.read_meta(args.params).get("dims", {}), **given}
    platforms = tuple(p.strip() for p in args.platforms.split(",")) if args.platforms else None
    manifest = export.export(prog, params, args.out, dims, platforms)
    ins = ", ".join(f"{i['name']}: {i['dtype']}{i['shape']}" for i in manifest["inputs"])
    print(f"wrote {os.path.join(args.out, manifest['file'])} and manifest.json")
    print(f"  inputs  {ins}")
    print(f"  outputs {', '.join(o['name'] for o in manifest['outputs'])}")
    print(f"  for {', '.join(manifest['platforms'])} (jax {manifest['jax']})")
    return EXIT_OK


def cmd_plot(args) -> int:
    from ddm.runtime.plots import plot_run

    for path in plot_run(args.run_dir):
        print(f"wrote {path}")
    return EXIT_OK


def cmd_sources(args) -> int:
    from rich.table import Table
    from rich.text import Text

    from ddm.runtime.data import SOURCES

    if args.name and args.name not in SOURCES:
        print(
            f"error: no data source '{args.name}'; the sources: {', '.join(SOURCES)}",
            file=sys.stderr,
        )
        return EXIT_USER
    console = terminal.console()
    for name, src in SOURCES.items():
        if args.name and name != args.name:
            continue
        # Text, not a markup string: the docs hold shapes such as f32[window, assets]
        table = Table(
            title=name, title_justify="left", caption=Text(src.doc), caption_justify="left"
        )
        table.add_column("setting")
        table.add_column("kind")
        table.add_column("default")
        table.add_column("range")
        for a in src.kwargs:
            default = "required" if a.required else repr(a.default)
            rng = src.ranges.get(a.name)
            table.add_row(a.name, a.kind, default, str(rng) if rng else "")
        if src.maps_inputs:
            table.add_row("INPUT", "str | list", "its own name", "columns or arrays of an input")
        console.print(table)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
