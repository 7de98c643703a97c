"""The training loop behind ``ddmc compile --run``: data → params → optax steps → metrics.

Randomness comes only from ``jax.random.key(seed)``: params from ``fold_in(key, 0)``, the
batch order of epoch ``e`` from ``fold_in(fold_in(key, 1), e)``. Same seed and config → the
same bits in ``metrics.json`` (timings go to ``timing.json``, which naturally differ).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddm.compiler.binding import bind_dims
from ddm.compiler.program import Program
from ddm.compiler.solver_report import summary
from ddm.dsl.diagnostics import ConfigDiagnostic, DataDiagnostic, DdmError
from ddm.runtime import resume as resume_state
from ddm.runtime.checkpoint import save_params, write_json
from ddm.runtime.compiled import Compiled
from ddm.runtime.config import RunConfig
from ddm.runtime.data import SOURCES, Dataset
from ddm.runtime import compliance, diagnostics, saliency
from ddm.runtime.phi import Curriculum, PhiSetup
from ddm.runtime.optimizers import learned_lr, make_optimizer, make_schedule


@dataclass
class RunResult:
    metrics: dict[str, Any]
    timing: dict[str, float]
    params: Any
    out_dir: str | None
    log: list = field(default_factory=list)  # the lines of log.jsonl


def load_data(prog: Program, cfg: RunConfig) -> Dataset:
    spec = dict(cfg.values["data"])
    name = spec.pop("name")
    try:
        data = SOURCES[name].load(**spec)
    except DataDiagnostic as err:
        if err.span is None:
            raise cfg.error("data", f"data source {name}: {err.message}", hint=err.hint) \
                from None
        raise
    roots = [prog.graph.loss] + [i for _, i in prog.graph.metrics]
    needed = prog.graph.inputs_needed([r for r in roots if r is not None])
    for split in ("train", "test"):
        arrays = getattr(data, split)
        missing = [s.name for s in needed if s.name not in arrays]
        if missing:
            raise cfg.error("data", f"data source {name} provides inputs "
                            f"{', '.join(sorted(arrays))}; the program also needs "
                            f"{', '.join(missing)}",
                            hint="rename the program's inputs to match, or choose another "
                                 "source")
        for s in needed:
            a = np.asarray(arrays[s.name])
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                row = int(np.argwhere(~np.isfinite(a.reshape(len(a), -1)))[0][0])
                raise cfg.error("data", f"data source {name}: input '{s.name}' has a non-finite "
                                f"value in {split} sample {row}")
    return data


def run(prog: Program, cfg: RunConfig, out_dir: str | None, console=None,
        resume: bool = False) -> RunResult:
    """Train ``prog`` as ``cfg`` says; write artefacts to ``out_dir``; return final metrics.

    With ``resume``, continue from the checkpoint in ``out_dir`` (``checkpoint_every`` steps,
    or written on Ctrl-C): the run then ends bit for bit where an uninterrupted one would."""
    import jax
    import jax.numpy as jnp
    import optax

    v = cfg.values
    if v.get("loss"):  # a named loss chosen by the run
        named = dict(prog.graph.losses)
        if v["loss"] not in named:
            raise cfg.error("loss", f"the program has no loss named '{v['loss']}'",
                            hint="its named losses: " + (", ".join(named) or "none"))
        if prog.graph.loss != named[v["loss"]]:
            prog = prog.with_loss(v["loss"])
    if v.get("rules") == "off" and prog.graph.rules:
        prog = prog.without_rules()  # "pure DP": the rules are measured, not trained on
    g = prog.graph
    if g.loss is None:
        raise ConfigDiagnostic(None, f"{g.file} declares no loss, so --run has nothing to train",
                               hint="add: loss = ...")
    data = load_data(prog, cfg)
    needed = g.inputs_needed([g.loss] + [i for _, i in g.metrics])
    metric_needed = g.inputs_needed([i for _, i in g.metrics] + [g.loss])
    shapes = {s.name: np.shape(data.train[s.name]) for s in needed}
    dtypes = {s.name: np.asarray(data.train[s.name]).dtype for s in needed}
    try:
        dims = bind_dims(g, shapes, dtypes, needed, True, f"data {v['data']['name']}")
    except DdmError as err:
        raise prog.sources.locate(err) from None

    key = jax.random.key(v["seed"])
    params = prog.init(jax.random.fold_in(key, 0), **dims)
    opt = make_optimizer(v["optimizer"], v["clip_norm"], v["steps"])
    lr_at = make_schedule(v["optimizer"], v["steps"])  # a number, or the step's learning rate
    opt_state = opt.init(params)
    fdt = prog.float_dtype

    def device(arrays, inputs):
        out = {}
        for s in inputs:
            a = np.asarray(arrays[s.name])
            out[s.name] = jnp.asarray(a, fdt if a.dtype.kind == "f" else None)
        return out

    if v.get("saliency"):
        saliency.check(prog, cfg, dims)
    if v.get("target"):
        names = sorted(dict(g.metrics)) + ["loss"]
        if v["target"]["metric"] not in names:
            raise cfg.error("target.metric", f"the program has no metric "
                            f"'{v['target']['metric']}'", hint="its metrics: "
                            + ", ".join(names))
    train = device(data.train, needed)
    test = device(data.test, metric_needed)
    n = data.n("train")
    batch = min(v["batch"], n)
    per_epoch = n // batch

    declarative = [v.id for v in g.values if v.op == "argmin"]

    clip_norm = v["clip_norm"]
    phi = PhiSetup(prog, cfg, {s.name for s in needed if dtypes[s.name].kind == "f"})
    step_key = jax.random.fold_in(key, 2)  # noise of random ops (gumbel_softmax) per step

    def objective(params, sample, key_t):
        loss, (infos, extras) = prog._loss_values_impl(params, sample, phi.roots, key=key_t)
        penalty = jnp.zeros((), loss.dtype)
        if phi.ortho is not None:
            penalty = phi.ortho_weight * prog._orthogonality_impl(
                params, sample, phi.ortho, key=key_t, cosine=phi.ortho_cosine)
        return loss + penalty, (infos, extras, penalty)

    def step(params, opt_state, tally, arrays, idx):
        sample = {k: a[idx] for k, a in arrays.items()}
        key_t = jax.random.fold_in(step_key, tally["step"])
        if phi.boosted:  # the loss's saliency w.r.t. the inputs, from the same backward pass
            xs = {k: sample[k] for k in phi.pool}
            (loss, (infos, extras, penalty)), (grads, xgrads) = jax.value_and_grad(
                lambda p, x: objective(p, {**sample, **x}, key_t), argnums=(0, 1),
                has_aux=True)(params, xs)
        else:
            (loss, (infos, extras, penalty)), grads = jax.value_and_grad(
                objective, has_aux=True)(params, sample, key_t)
            xgrads = {}
        updates, new_state = opt.update(grads, opt_state, params)
        new_params = phi.remember(optax.apply_updates(params, updates), params, extras, xgrads)
        ok, stats = solver_stats(prog, infos)
        gnorm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        # A failed solve has no trustworthy gradient: under the error policy, or when NaNs of
        # the nan policy reach the loss, keep the old state (the host decides what follows,
        # checking every step). Without declarative nodes the host looks only at log steps, so
        # the first non-finite step is recorded here and the params freeze from then on: they
        # stay the last good ones, and nothing is synchronised per step.
        bad = tally["bad"]
        if declarative:
            apply = ok & finite
        else:
            bad = jnp.where(~finite & (bad == 0), tally["step"] + 1, bad)
            apply = finite & (bad == 0)
        clipped = apply & (gnorm > clip_norm) if clip_norm > 0 else jnp.bool_(False)
        tally = {"step": tally["step"] + 1, "bad": bad,
                 "clipped": tally["clipped"] + clipped.astype(jnp.int32),
                 "guards": tally["guards"] + phi.violations(extras)}
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, old)  # noqa
        grad_stats = diagnostics.basic(grads) if v["diagnostics"] != "off" else {}
        return (keep(new_params, params), keep(new_state, opt_state), tally, loss, gnorm, ok,
                finite, clipped, stats, grad_stats, penalty)

    train_step = Compiled(step, "train step", donate_argnums=(0, 1, 2))
    # the noise of the gradient on log steps: one extra compilation, so only when asked
    diagnose = Compiled(diagnostics.make(prog, batch)[0], "gradient diagnostics")
    adjoint_ids = [i for i in prog.adjoint_ids() if g.values[i].name]
    adjoints = Compiled(lambda p, arrays, idx: prog._adjoint_stats_impl(
        p, {k: a[idx] for k, a in arrays.items()}), "node gradient statistics")
    curriculum = Curriculum(prog, v.get("curriculum"), n, batch, jax.random.fold_in(key, 3))
    metric_ids = dict(g.metrics)
    rule_roots = tuple((r.name, r.intent, metric_ids[f"rule_{r.name}_activation"],
                        metric_ids[f"rule_{r.name}_effective_penalty"]) for r in g.rules)
    evaluate_info = Compiled(prog._metrics_info_impl, "metrics on the test set")
    evaluate_train_info = Compiled(prog._metrics_info_impl, "metrics on the training set")

    solver_summary: dict = {}

    def evaluate(params, arrays, what="metrics on the test set", fn=evaluate_info):
        out, infos = fn(params, arrays)
        prog.check_solvers(infos, what)
        if infos:
            solver_summary[what] = summary(prog, infos)
        return out

    def evaluate_train(params, arrays):
        return evaluate(params, arrays, "metrics on the training set", evaluate_train_info)
    order_key = jax.random.fold_in(key, 1)

    def batch_indices(s):
        """Rows of training step s (0-based): a function of (seed, epoch) only."""
        epoch, pos = divmod(s, per_epoch)
        return jax.random.permutation(jax.random.fold_in(order_key, epoch), n)[
            pos * batch:(pos + 1) * batch]

    log_lines: list = []
    skipped = clipped_before = start = 0
    print_ = resume_state.fingerprint(prog.sources.texts.get(g.file, ""), _jsonable(v))
    if resume:
        try:
            r = resume_state.load(out_dir, params, opt_state, print_)
        except ValueError as err:
            raise ConfigDiagnostic(None, f"--resume {out_dir}: {err}") from None
        if r.step >= v["steps"]:
            raise ConfigDiagnostic(None, f"--resume {out_dir}: the checkpoint is at step "
                                   f"{r.step} of {v['steps']}; nothing to do",
                                   hint=f"raise steps, e.g. --set steps={2 * r.step}")
        params, opt_state, log_lines, skipped, start = (r.params, r.opt_state, r.log,
                                                        r.skipped, r.step)
        clipped_before = r.clipped
    guard_counts = jnp.zeros(len(g.guards), jnp.int32)
    if resume and "guards" in r.state:
        guard_counts = jnp.asarray(r.state["guards"], jnp.int32)
    if resume and "curriculum" in r.state:
        curriculum.probs = np.asarray(r.state["curriculum"], np.float64)
        curriculum.weights = np.asarray(r.state["curriculum_weights"], np.float64)
        curriculum.refreshed = int(r.state["curriculum_refreshes"])
    tally = {"step": jnp.int32(start), "bad": jnp.int32(0), "clipped": jnp.int32(clipped_before),
             "guards": guard_counts}
    last_checkpoint: list = []  # (step, path) of the newest checkpoint written

    def checkpoint(done: int) -> None:
        if out_dir:
            state = {"guards": np.asarray(tally["guards"])}
            if curriculum.probs is not None:
                state["curriculum"] = curriculum.probs
                state["curriculum_weights"] = curriculum.weights
                state["curriculum_refreshes"] = np.asarray(curriculum.refreshed)
            path = resume_state.save(out_dir, done, params, opt_state, log_lines, skipped,
                                     print_, int(tally["clipped"]), state)
            last_checkpoint[:] = [(done, path)]

    drawn: dict[int, Any] = {}  # curriculum batches since the last log step, by step

    def nonfinite_stop():
        bad_step = int(tally["bad"])
        rows = drawn.get(bad_step - 1) if curriculum.on else batch_indices(bad_step - 1)
        sample = {k: a[rows] for k, a in train.items()}
        raise _nonfinite_error(prog, params, sample, bad_step, last_checkpoint)

    interrupted = _InterruptFlag()
    perm = None
    started = time.perf_counter()
    progress = _Progress(console, v["steps"])
    try:
        interrupted.install()
        for s in range(start, v["steps"]):
            epoch, pos = divmod(s, per_epoch)
            if curriculum.on:
                idx = curriculum.indices(s, params, train)
                drawn[s] = idx
            else:
                if pos == 0 or perm is None:
                    perm = jax.random.permutation(jax.random.fold_in(order_key, epoch), n)
                idx = perm[pos * batch:(pos + 1) * batch]
            (params, opt_state, tally, loss, gnorm, ok, finite, clipped, stats,
             grad_stats, penalty) = train_step(params, opt_state, tally, train, idx)
            if declarative and not bool(ok):
                raise solver_failure(prog, stats, s + 1, np.asarray(idx))
            skip = declarative and not bool(finite)
            if skip:
                if not _nan_policy_failed(prog, stats):
                    what = (f"the loss became {float(loss)}" if not math.isfinite(float(loss))
                            else f"the gradient's norm became {float(gnorm)}")
                    raise DataDiagnostic(None, f"{what} at step {s + 1}; training stopped "
                                         "before applying that step's update",
                                         hint="lower the learning rate or set clip_norm")
                skipped += 1  # NaNs the user asked for (on_infeasible="nan"): skip the step
            log_now = (s + 1) % v["log_every"] == 0 or s + 1 == v["steps"]
            if log_now and skip:
                log_lines.append({"step": s + 1, "loss": None, "skipped": True,
                                  "solvers": _solver_log(prog, stats), "skipped_steps": skipped})
            elif log_now:
                if not declarative and int(tally["bad"]):
                    nonfinite_stop()
                drawn.clear()
                loss_f = float(loss)
                line = {"step": s + 1, "loss": loss_f, "grad_norm": float(gnorm),
                        "wall_s": round(time.perf_counter() - started, 3)}
                if clip_norm > 0:
                    line["clipped"] = bool(clipped)
                if callable(lr_at):
                    line["lr"] = float(lr_at(s + 1))
                elif (eta := learned_lr(opt_state)) is not None:
                    line["lr"] = float(eta)  # after this step's update of it
                if declarative:
                    line["solvers"] = _solver_log(prog, stats)
                    line["skipped_steps"] = skipped
                if rule_roots:
                    line["rules"] = _rule_log(prog, rule_roots, params,
                                              {k: a[idx] for k, a in train.items()})
                    for r in g.rules:
                        if r.memory:
                            line["rules"][r.name]["memory"] = float(
                                prog.param_values(params)[r.memory])
                if phi.ortho is not None:
                    line["orthogonality_penalty"] = float(penalty)
                if g.guards:
                    line["guard_violations"] = {x.name: int(c) for x, c in
                                                zip(g.guards, np.asarray(tally["guards"]))}
                if curriculum.on:
                    line["curriculum"] = curriculum.log(idx)
                if v["diagnostics"] != "off":
                    line["grad"] = diagnostics.to_floats(grad_stats)
                if v["diagnostics"] == "full":
                    noise = diagnostics.to_floats(diagnose(params, train, idx))
                    for name, extra in noise.items():
                        line["grad"][name].update(extra)
                    nodes = adjoints(params, train, idx)
                    line["node_grad_norms"] = {prog.node_label(i): float(nodes[i]["norm"])
                                               for i in adjoint_ids}
                    line["node_grads"] = {prog.node_label(i): {k: float(x) for k, x in
                                                               nodes[i].items() if k != "norm"}
                                          for i in adjoint_ids}
                log_lines.append(line)
                progress.update(s + 1, loss_f)
            if v["eval_every"] and (s + 1) % v["eval_every"] == 0 and s + 1 < v["steps"]:
                m = _floats(evaluate(params, test))
                log_lines.append({"step": s + 1, "test": m})
                progress.note(s + 1, m)
            every = v["checkpoint_every"]
            if interrupted or (every and (s + 1) % every == 0 and s + 1 < v["steps"]):
                if not declarative and int(tally["bad"]):
                    nonfinite_stop()
                checkpoint(s + 1)
            if interrupted:
                raise TrainingInterrupted(s + 1, v["steps"], out_dir)
    finally:
        interrupted.restore()
        progress.close()
    if not declarative and int(tally["bad"]):
        nonfinite_stop()
    jax.block_until_ready(params)
    # run_s: training alone (the diagnostics' compilation is reported with the others)
    run_s = (time.perf_counter() - started - train_step.trace_s - train_step.compile_s
             - diagnose.trace_s - diagnose.compile_s - adjoints.trace_s - adjoints.compile_s)
    final_train = _floats(evaluate_train(params, {k: train[k] for k in test}))
    final_test = _floats(evaluate(params, test))
    metrics = {
        "program": os.path.basename(g.file),
        "config": _jsonable(v),
        "data": dict(data.info),
        "steps": v["steps"],
        "train": final_train,
        "test": final_test,
        "params": {k: _floats_tree(x) for k, x in prog.param_values(params).items()
                   if np.size(x) <= 16},
    }
    if solver_summary:
        metrics["solvers"] = solver_summary.get("metrics on the test set", {})
    if declarative:
        metrics["skipped_steps"] = skipped
    if clip_norm > 0:
        metrics["clipped_steps"] = int(tally["clipped"])
        metrics["clip_frequency"] = int(tally["clipped"]) / max(v["steps"], 1)
    if v.get("saliency"):
        vid = g.nodes[v["saliency"]["of"]]
        metrics["saliency"] = saliency.compute(
            prog, params, device(data.test, g.inputs_needed([vid])), v["saliency"])
    grad_summary = diagnostics.summary(log_lines)
    if grad_summary:
        metrics["gradients"] = grad_summary
    if (eta := learned_lr(opt_state)) is not None:
        metrics["learned_lr"] = float(eta)
    target = v.get("target")
    if target:
        evals = [(line["step"], line["test"]) for line in log_lines if "test" in line]
        evals.append((v["steps"], final_test))
        below = target["below"]
        reached = [st for st, m in evals
                   if (m[target["metric"]] <= target["value"] if below
                       else m[target["metric"]] >= target["value"])]
        metrics["target"] = {"metric": target["metric"], "value": target["value"],
                             "below": below,
                             "steps_to_target": reached[0] if reached else None,
                             "evaluated_every": v["eval_every"]}
    if phi.ortho is not None:
        pens = [line["orthogonality_penalty"] for line in log_lines
                if "orthogonality_penalty" in line]
        metrics["orthogonality_penalty"] = pens[-1] if pens else None
    nodes_logged = [line for line in log_lines if "node_grad_norms" in line]
    if nodes_logged:
        metrics["node_grad_norms"] = nodes_logged[-1]["node_grad_norms"]
        metrics["node_grads"] = nodes_logged[-1]["node_grads"]
    if g.guards:
        metrics["compliance"] = compliance.report(prog, params, test,
                                                  np.asarray(tally["guards"]), v["steps"] * batch)
    if curriculum.on:
        metrics["curriculum"] = curriculum.summary()
    compiled = (train_step, evaluate_info, evaluate_train_info, diagnose, adjoints)
    timing = {
        "trace_s": round(sum(c.trace_s for c in compiled), 4),
        "xla_compile_s": round(sum(c.compile_s for c in compiled), 4),
        "run_s": round(max(run_s, 0.0), 4),
        # run_s already excludes tracing and XLA compilation (the first step's cost)
        "steps_per_s": round(v["steps"] / max(run_s, 1e-9), 2),
        "recompilations": sum(c.compilations - 1 for c in compiled),
        "device": str(jax.devices()[0].platform),
    }
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "metrics.json"), metrics)
        write_json(os.path.join(out_dir, "timing.json"), timing)
        save_params(os.path.join(out_dir, "params.npz"), params)
        with open(os.path.join(out_dir, "log.jsonl"), "w") as fh:
            for line in log_lines:
                fh.write(json.dumps(line, sort_keys=True) + "\n")
        if g.guards:
            write_json(os.path.join(out_dir, "compliance.json"), metrics["compliance"])
    return RunResult(metrics, timing, params, out_dir, log_lines)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the checkpoint of the last completed step was written."""

    def __init__(self, step: int, steps: int, out_dir: str | None):
        self.step, self.steps, self.out_dir = step, steps, out_dir
        where = (f"; checkpoint written to {out_dir}, continue with --resume {out_dir}"
                 if out_dir else "")
        super().__init__(f"training interrupted after step {step} of {steps}{where}")


class _InterruptFlag:
    """Turns SIGINT into a flag the loop reads between steps: a step is never cut in half
    (its donated buffers would be gone) and the checkpoint is of a completed step."""

    def __init__(self):
        self.raised = False
        self._old = None

    def __bool__(self) -> bool:
        return self.raised

    def install(self) -> None:
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.raised:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.raised = True

    def restore(self) -> None:
        if self._old is not None:
            import signal
            signal.signal(signal.SIGINT, self._old)
            self._old = None


def _nonfinite_error(prog: Program, params, sample, step: int, last_checkpoint) -> DdmError:
    """The stop for a non-finite loss or gradient at ``step``, located at the first node whose
    value on that step's batch is NaN or Inf (params are the last good ones)."""
    names = prog.nonfinite_nodes(params, sample)
    saved = (f"; the last checkpoint is {last_checkpoint[0][1]} (step {last_checkpoint[0][0]})"
             if last_checkpoint else "")
    where = None
    if names:
        first = names[0]
        what = (f"the loss became non-finite at step {step}: the first non-finite value is "
                f"node '{first}'" if first != "loss" else
                f"the loss became non-finite at step {step}: every node before it is finite")
        vid = prog.graph.nodes.get(first, prog.graph.loss)
        where = prog.graph.values[vid].span
    else:
        what = (f"the gradient became non-finite at step {step} (every forward value is "
                "finite: the NaN arises in the backward pass)")
    err = DataDiagnostic(where, f"{what}; training stopped with the params of step "
                         f"{step - 1}{saved}",
                         hint="lower the learning rate, set clip_norm, or guard the operation "
                         "(log of a non-positive value, division by zero)")
    return prog.sources.locate(err) if where is not None else err


def grad_norms_of_run(prog: Program, run_dir: str) -> dict:
    """‖∂loss/∂value‖ by value id and ‖∂loss/∂param‖ by name, at the params a run ended with
    (``RUN_DIR/params.npz``) on the first ``batch`` rows of its training data (rebuilt from the
    config in ``RUN_DIR/metrics.json``): what ``ddmc render --grads RUN_DIR`` draws. Written
    to ``RUN_DIR/grad_norms.json`` as a cache; runs themselves do not pay for it."""
    import jax
    import optax

    from ddm.runtime.checkpoint import load_params

    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    cfg = RunConfig.defaults()
    cfg.values.update(metrics["config"])
    if cfg.values.get("loss"):
        prog = prog.with_loss(cfg.values["loss"])
    params = load_params(os.path.join(run_dir, "params.npz"))
    data = load_data(prog, cfg)
    batch = min(int(cfg.values["batch"]), data.n("train"))
    g = prog.graph
    names = {s.name for s in g.inputs_needed([g.loss])}
    first = {k: np.asarray(a[:batch]) for k, a in data.train.items() if k in names}
    norms = prog.grad_norms(params, first)
    grads = jax.jit(jax.grad(prog._loss_impl))(params, first)
    out = {"step": metrics["steps"], "batch": batch,
            "values": {str(i): n for i, n in norms.items()},
            "params": {k: float(optax.tree.norm(x)) for k, x in grads.items()},
            "labels": {str(i): f"{g.values[i].name or g.values[i].op}: {g.values[i].type}"
                       for i in norms}}
    write_json(os.path.join(run_dir, "grad_norms.json"), out)
    return out


def solver_stats(prog: Program, infos):
    """(all error-policy solves converged, per node: failures, first failure, its status and
    residual, worst residual, mean iterations, count of each status) — computed on device, a
    few scalars each."""
    import jax.numpy as jnp

    from ddm.library.solvers.status import STATUS_NAMES

    ok = jnp.bool_(True)
    stats = {}
    for vid, info in infos.items():
        # flat over the batch and, for a node inside a scan, its steps ([B, N] row-major)
        status = jnp.ravel(info.status)
        residual = jnp.ravel(info.residual)
        problem = prog.graph.values[vid].attr("problem")
        bad = ~jnp.isin(status, jnp.asarray(problem.accepted))
        first = jnp.argmax(bad)
        if problem.on_infeasible == "error":
            ok = ok & ~jnp.any(bad)
        counts = jnp.stack([jnp.sum(status == code) for code in range(len(STATUS_NAMES))])
        stats[vid] = {"failed": jnp.sum(bad), "first": first, "status": status[first],
                      "counts": counts,
                      "per_sample": status.size // max(jnp.shape(info.status)[0], 1)
                      if jnp.ndim(info.status) else 1,
                      "residual": residual[first], "max_residual": jnp.max(residual),
                      "mean_iterations": jnp.mean(jnp.atleast_1d(info.iterations)
                                                  .astype(jnp.float32))}
    return ok, stats


def solver_failure(prog: Program, stats, step: int, idx) -> DdmError:
    from ddm.dsl.diagnostics import SolverDiagnostic
    from ddm.library.solvers.status import STATUS_HINTS, status_name

    for vid, st in sorted(stats.items()):
        problem = prog.graph.values[vid].attr("problem")
        if problem.on_infeasible != "error" or int(st["failed"]) == 0:
            continue
        k, at = divmod(int(st["first"]), int(st["per_sample"]))  # at: the scan step, if any
        code = int(st["status"])
        v = prog.graph.values[vid]
        inside = f", scan step {at}" if vid in prog.graph.nested() else ""
        err = SolverDiagnostic(v.span, f"{problem.sense} node '{prog.node_label(vid)}' failed at "
                               f"step {step} on training sample {int(idx[k])} (instance {k} of "
                               f"the batch{inside}): {status_name(code)} (residual "
                               f"{float(st['residual']):.3g}); {int(st['failed'])} instance(s) "
                               "failed; training stopped before applying that step's update",
                               hint=STATUS_HINTS[code])
        return prog.sources.locate(err)
    raise AssertionError("solver_failure called without a failure")


def _nan_policy_failed(prog: Program, stats) -> bool:
    return any(prog.graph.values[vid].attr("problem").on_infeasible == "nan"
               and int(st["failed"]) > 0 for vid, st in stats.items())


def _rule_log(prog: Program, rules, params, sample) -> dict:
    """Each Φ-rule on the step's batch: its intent, activation rate and effective penalty."""
    roots = tuple(i for _, _, a, e in rules for i in (a, e))
    values = prog._values(params, sample, roots)
    return {name: {"intent": intent, "activation": float(values[a]),
                   "effective_penalty": float(values[e])} for name, intent, a, e in rules}


def _solver_log(prog: Program, stats) -> dict:
    """Per declarative node on a log step: failures, the count of each status met, worst
    residual and mean iterations."""
    from ddm.library.solvers.status import STATUS_NAMES
    out = {}
    for k, st in stats.items():
        entry = {name: (int(x) if name == "failed" else float(x)) for name, x in st.items()
                 if name in ("failed", "max_residual", "mean_iterations")}
        counts = [int(c) for c in st["counts"]]
        entry["status"] = {STATUS_NAMES[i]: c for i, c in enumerate(counts) if c}
        out[prog.node_label(k)] = entry
    return out


def _floats(tree) -> dict[str, float]:
    return {k: float(x) for k, x in sorted(tree.items())}


def _floats_tree(x):
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a.tolist()


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(x) for k, x in value.items()}
    return value


class _Progress:
    """A rich progress bar on a terminal; plain lines when output is piped."""

    def __init__(self, console, total: int):
        self.console = console
        self.total = total
        self.bar = None
        self.last_tenth = 0
        if console is not None and console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)
            self.bar = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(),
                                console=console, transient=True)
            self.task = self.bar.add_task("train", total=total, loss="…")
            self.bar.start()

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.5g}")
        elif self.console is not None and (step * 10 // self.total != self.last_tenth
                                           or step == self.total):
            self.last_tenth = step * 10 // self.total
            self.console.print(f"step {step}/{self.total}  loss {loss:.6g}", highlight=False)

    def note(self, step: int, metrics: dict) -> None:
        if self.console is not None:
            text = "  ".join(f"{k} {x:.4g}" for k, x in metrics.items())
            self.console.print(f"step {step}: test {text}", highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
