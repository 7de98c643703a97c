"""Checkpoints, Ctrl-C and --resume; the stop on a non-finite loss; gradient-clipping records.

The resume test is the issue's own: kill a run mid-way (SIGINT, as Ctrl-C sends), resume it,
and compare with an uninterrupted run — params and metrics bit for bit, the log line for line
(wall-clock times aside).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ddm
from ddm.dsl.diagnostics import DataDiagnostic
from ddm.runtime import adjoints, train
from ddm.runtime.config import RunConfig
from ddm.runtime.data import Dataset, Source

from conftest import EXAMPLES, ROOT
from test_examples import ddmc as run_ddmc

RUN = [
    "--set",
    "steps=400",
    "--set",
    "checkpoint_every=25",
    "--set",
    "log_every=25",
    "--set",
    "data.n_train=2000",
    "--set",
    "data.n_test=1000",
]


def ddmc(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "ddm.cli.main", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "120"},
        **kwargs,
    )


def log_without_wall_time(path):
    lines = [json.loads(x) for x in open(path).read().splitlines()]
    for line in lines:
        line.pop("wall_s", None)
    return lines


def test_an_interrupted_run_resumes_to_the_same_bits(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    ref = ddmc("train", str(EXAMPLES / "credit.ddm"), *RUN, "--out", str(whole))
    assert ref.wait(timeout=300) == 0, ref.stderr.read()

    proc = ddmc("train", str(EXAMPLES / "credit.ddm"), *RUN, "--out", str(cut))
    meta = cut / "checkpoint.json"
    # wait for the checkpoint of step 50 (a hang is caught by the suite's per-test timeout)
    while proc.poll() is None:
        if meta.exists() and json.loads(meta.read_text() or "{}").get("step", 0) >= 50:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    err = proc.stderr.read()
    assert "training interrupted after step" in err and f"--resume {cut}" in err
    assert err.count("ddmc: Ctrl-C — stopping after the current step") == 1  # acknowledged
    stopped = json.loads(meta.read_text())["step"]
    assert 50 <= stopped < 400 and not (cut / "metrics.json").exists()

    # the checkpoint's own settings: none of the --set of the first run is repeated
    again = ddmc("train", str(EXAMPLES / "credit.ddm"), "--resume", str(cut))
    assert again.wait(timeout=300) == 0, again.stderr.read()
    for name in ("params.npz", "params.npz.sha256", "metrics.json"):
        assert (cut / name).read_bytes() == (whole / name).read_bytes(), name
    assert log_without_wall_time(cut / "log.jsonl") == log_without_wall_time(whole / "log.jsonl")
    # timing.json counts what happened: no negative recompilations (functions never called
    # compiled zero times), and the resumed run's speed over the steps it ran, not all 400
    for run in (whole, cut):
        timing = json.loads((run / "timing.json").read_text())
        assert timing["recompilations"] == 0, timing
    resumed = json.loads((cut / "timing.json").read_text())
    assert resumed["steps_per_s"] == pytest.approx((400 - stopped) / resumed["run_s"], rel=0.02)


def test_resume_refuses_another_config_and_a_missing_checkpoint(tmp_path):
    out = tmp_path / "run"
    r = ddmc("train", str(EXAMPLES / "credit.ddm"), *RUN, "--set", "steps=60", "--out", str(out))
    assert r.wait(timeout=300) == 0, r.stderr.read()
    # a finished run keeps its last checkpoint (step 50 of 60): extended by steps alone
    r = ddmc("train", str(EXAMPLES / "credit.ddm"), "--set", "steps=40", "--resume", str(out))
    assert r.wait(timeout=300) == 1
    assert "steps may only be raised (the run was set to 60, this call says 40)" in r.stderr.read()
    r = ddmc(
        "train",
        str(EXAMPLES / "credit.ddm"),
        *RUN,
        "--set",
        "optimizer.lr=0.5",
        "--resume",
        str(out),
    )
    assert r.wait(timeout=300) == 1
    err = r.stderr.read()
    assert "this call would change optimizer.lr: 0.003 → 0.5" in err, err
    assert "only steps may change" in err
    r = ddmc("train", str(EXAMPLES / "credit.ddm"), *RUN, "--resume", str(tmp_path / "none"))
    assert r.wait(timeout=300) == 1
    assert "no checkpoint in" in r.stderr.read()


# --- in process, on synthetic data -----------------------------------------------------------


def run_on(monkeypatch, tmp_path, text, x, **settings):
    data = Dataset({"x": x}, {"x": x[:4]})
    sources = {"synthetic": Source("synthetic", (), lambda: data, "")}
    monkeypatch.setattr(train, "SOURCES", sources)
    cfg = RunConfig.defaults()
    cfg.values.update(data={"name": "synthetic"}, batch=4, eval_every=0, **settings)
    cfg.validate(sources)
    return train.run(ddm.loads(text, file="nan.ddm"), cfg, str(tmp_path))


SHRINKING_LOG = """input x: f32
param w: f32 = 1.0
node h = log(w) * x
loss = mean(h)
"""


def test_a_non_finite_loss_stops_at_its_step_and_names_the_first_bad_node(monkeypatch, tmp_path):
    # d loss/d w = mean(x)/w > 0, so plain SGD drives w through 0 and log(w) becomes NaN
    with pytest.raises(DataDiagnostic) as info:
        run_on(
            monkeypatch,
            tmp_path,
            SHRINKING_LOG,
            np.ones(16, np.float32),
            steps=200,
            log_every=50,
            checkpoint_every=2,
            optimizer={"name": "sgd", "lr": 0.3},
        )
    text = str(info.value)
    assert "nan.ddm:3:10" in text and "first non-finite value is node 'h'" in text
    step = int(text.split("non-finite at step ")[1].split(":")[0])
    assert f"params of step {step - 1}" in text
    assert "the last checkpoint is" in text and "checkpoint.npz" in text
    saved = json.loads((tmp_path / "checkpoint.json").read_text())["step"]
    assert saved < step


def test_clipped_steps_are_counted_and_logged(monkeypatch, tmp_path):
    result = run_on(
        monkeypatch,
        tmp_path,
        "input x: f32\nparam w: f32 = 3.0\nloss = mean((w * x - 1.0) ** 2)\n",
        np.ones(16, np.float32),
        steps=40,
        log_every=10,
        clip_norm=1e-3,
    )
    assert result.metrics["clipped_steps"] == 40
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(line["clipped"] is True and "wall_s" in line for line in lines)


def test_learning_rate_schedules_warm_up_and_decay_to_their_final_value():
    from ddm.runtime.optimizers import make_schedule

    base = {"lr": 0.1, "final_lr": 0.01}
    assert make_schedule({**base, "schedule": "constant", "warmup": 0}, 100) == 0.1
    for kind in ("constant", "cosine", "linear", "exponential"):
        f = make_schedule({**base, "schedule": kind, "warmup": 10}, 110)
        assert float(f(0)) == 0.0 and float(f(5)) == pytest.approx(0.05)
        assert float(f(10)) == pytest.approx(0.1)
        end = 0.1 if kind == "constant" else 0.001
        assert float(f(110)) == pytest.approx(end, rel=1e-4), kind


def test_a_scheduled_run_logs_its_learning_rate(monkeypatch, tmp_path):
    run_on(
        monkeypatch,
        tmp_path,
        "input x: f32\nparam w: f32 = 3.0\nloss = mean((w * x - 1.0) ** 2)\n",
        np.ones(16, np.float32),
        steps=40,
        log_every=10,
        optimizer={"name": "adam", "lr": 0.01, "schedule": "cosine", "warmup": 10, "final_lr": 0.0},
    )
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [round(line["lr"], 6) for line in lines] == [0.01, 0.0075, 0.0025, 0.0]


def test_log_steps_carry_gradient_diagnostics_and_metrics_summarise_them(tmp_path):
    runs = {}
    for mode in ("basic", "full", "off"):
        out = tmp_path / mode
        r = run_ddmc(
            "train",
            str(EXAMPLES / "credit.ddm"),
            "--out",
            str(out),
            "--set",
            "steps=100",
            "--set",
            "log_every=25",
            "--set",
            f"diagnostics={mode}",
        )
        assert r.returncode == 0, r.stderr
        lines = [json.loads(s) for s in (out / "log.jsonl").read_text().splitlines()]
        runs[mode] = (
            r,
            [line["grad"] for line in lines if "grad" in line],
            json.loads((out / "metrics.json").read_text()),
        )
    r, grads, metrics = runs["basic"]
    assert len(grads) == 4
    for stats in grads[-1].values():
        assert stats["norm"] >= 0 and 0 <= stats["sparsity"] <= 1 and "snr" not in stats
    layer = next(name for name, s in metrics["gradients"].items() if "first_last_ratio" in s)
    assert 0 <= metrics["gradients"][layer]["ratio_in_band"] <= 1
    assert "gradient " in r.stdout
    r, grads, metrics = runs["full"]
    for stats in grads[-1].values():
        assert 0 <= stats["signal_fraction"] <= 1 + 1e-6 and stats["snr"] >= 0
    assert all("noise_trend" in s for s in metrics["gradients"].values())
    assert "SNR" in r.stdout
    # per node: ‖∂L/∂value‖ of every named value on the gradient path, on every log step
    nodes = [
        json.loads(s)["node_grad_norms"]
        for s in (tmp_path / "full" / "log.jsonl").read_text().splitlines()
    ]
    assert len(nodes) == 4 and "p" in nodes[-1]
    assert metrics["node_grad_norms"] == nodes[-1] and "‖∂L/∂node‖" in r.stdout
    # the statistics observe; they never change the training
    assert metrics["params"] == runs["basic"][2]["params"] == runs["off"][2]["params"]
    assert runs["off"][1] == [] and "gradients" not in runs["off"][2]


def test_node_gradient_norms_of_a_step_are_the_adjoints_of_its_batch(tmp_path, monkeypatch):
    """With one step over the whole data, the logged norms equal ``grad_norms`` of the final
    params on that data (they are measured after the step's update)."""
    x = np.linspace(-1, 1, 32).astype(np.float32)
    prog = ddm.loads(
        "input x: f32\nparam a: f32 = 0.5\nnode y = a * x\nnode z = y ** 2\nloss = mean(z)\n",
        file="n.ddm",
    )
    data = Dataset({"x": x}, {"x": x})
    monkeypatch.setattr(train, "SOURCES", {"toy": Source("toy", (), lambda: data, "")})
    cfg = RunConfig.defaults()
    cfg.values.update(data={"name": "toy"}, batch=32, steps=1, log_every=1, diagnostics="full")
    cfg.validate(train.SOURCES)
    result = train.run(prog, cfg, str(tmp_path))
    norms = adjoints.grad_norms(prog.product, result.params, {"x": x})
    want = {prog.node_label(i): n for i, n in norms.items() if prog.graph.values[i].name}
    got = json.loads((tmp_path / "log.jsonl").read_text())["node_grad_norms"]
    assert set(got) == {"y", "z"} and got == pytest.approx(want, rel=1e-5)
    stats = json.loads((tmp_path / "log.jsonl").read_text())["node_grads"]
    # z's adjoint is 1/B in every sample: mean 1/B, no spread, the samples agree perfectly
    assert stats["z"]["mean"] == pytest.approx(1 / 32) and stats["z"]["std"] < 1e-9
    assert stats["z"]["sparsity"] == 0.0 and stats["z"]["snr"] > 1e6
    # y's adjoint 2·a·x/B is antisymmetric in x ∈ [−1, 1]: mean 0, SNR 0
    assert abs(stats["y"]["mean"]) < 1e-7 and stats["y"]["snr"] < 1e-6
    # by hand: ∂mean(z)/∂z_i = 1/B, ∂/∂y_i = 2·y_i/B
    a = float(result.params["a"])
    assert got["z"] == pytest.approx(1 / np.sqrt(32), rel=1e-5)
    assert got["y"] == pytest.approx(np.linalg.norm(2 * a * x / 32), rel=1e-4)


def test_micro_batch_statistics_are_exact_on_a_known_gradient():
    """Loss mean((w − x)²) over micro-batches with known means: the signal and the noise by
    hand."""
    import jax

    from ddm.runtime import diagnostics

    prog = ddm.loads("input x: f32\nparam w: f32 = 0.0\nloss = mean((w - x) ** 2)\n")
    x = np.repeat(np.arange(8, dtype=np.float32), 8)  # micro-batch k holds x = k
    fn, k = diagnostics.make(prog.product, 64)
    s = diagnostics.to_floats(jax.jit(fn)({"w": np.float32(0.0)}, {"x": x}, np.arange(64)))["w"]
    g = -2.0 * np.arange(8)  # ∂/∂w of mean((w − k)²) at w = 0
    assert k == 8
    assert abs(s["signal"] - abs(g.mean())) < 1e-5
    assert abs(s["noise"] - np.mean((g - g.mean()) ** 2)) < 1e-3
    assert abs(s["snr"] - g.mean() ** 2 / np.mean((g - g.mean()) ** 2)) < 1e-5
    assert abs(s["signal_fraction"] - g.mean() ** 2 / np.mean(g**2)) < 1e-5
