"""Data-parallel training over several devices (runtime/devices.py): the batch split over a
mesh, params replicated — the one-device result up to the order of the reductions.

JAX fixes its device count when it starts, so each check runs in a fresh process with four CPU
devices (``--devices``, or ``jax_num_cpu_devices`` in :func:`_worker`). The program has what
makes sharding hard: a sequential policy, an argmin inside the scan (a no-transaction band,
implicit gradients), a loss that is no mean of per-sample terms (entropic risk), and training
and test sets whose rows do not divide by the device count.

Tolerance: float64, 12 Adam steps — params within 1e-8 relative (1e-10 absolute), losses and
metrics within 1e-9 relative of one device. Measured: params 1.2e-11 absolute (3.6e-10 relative
at most), metrics 3e-11: the band's proximal solve stops at its tolerance, and the order of the
reductions — the only difference — can move where it stops. Without an argmin the difference is
~1e-16 (examples/hedge.ddm, 20 steps on 2 devices).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

BAND = """\
dim N = 5
dim N1 = 6
input S: f32[N1]
input tau: f32[N]
input cost: f32
param psi = mlp(2, 8, 2)
node x = log(S[0:5] / 100.0) / (0.2 * sqrt(tau))
node u = tau / 0.0137
node delta = norm_cdf(x + 0.1 * sqrt(tau))
node h = scan t in N, prev: f32 = 0.0 {
    let w = softplus(psi(stack([x[t], u[t]])) - 2.0)
    return argmin v: f32 { (v - prev) ** 2 } subject to {
        v >= delta[t] - w[0], v <= delta[t] + w[1]
    } using prox
}
node pnl = hedge_pnl(S, h, cost=cost, strike=100.0, premium=0.936)
output h, pnl
loss = entropic_risk(pnl)
metric risk = entropic_risk(pnl)
metric es = expected_shortfall(pnl, 0.05)
run {
    data = gbm_paths(sigma=0.2, days=5, steps=5, cost=0.01, n_train=1030, n_test=1001)
    optimizer = adam(lr=0.01)
    steps = 12
    batch = 256
    log_every = 4
}
"""


def _ddmc(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "ddm.cli.main", *args], capture_output=True, text=True, cwd=cwd
    )


def _worker(path: str, out: str) -> None:
    """In a fresh process with four CPU devices: train ``path`` on 1 and 4 devices (and 4
    again), and write what the tests compare to ``out``."""
    import jax

    jax.config.update("jax_num_cpu_devices", 4)
    jax.config.update("jax_enable_x64", True)
    import ddm
    from ddm.runtime import train as training

    seen: dict = {}
    original = training._Run.train

    def spy(self):  # how the run placed its arrays, read just before it trains
        seen[self.v["devices"]] = {
            "train_rows": {k: a.shape[0] for k, a in self.train_arrays.items()},
            "train_sharded": all(
                not a.sharding.is_fully_replicated for a in self.train_arrays.values()
            ),
            "test_replicated": all(a.sharding.is_fully_replicated for a in self.test.values()),
            "params_replicated": all(
                x.sharding.is_fully_replicated for x in jax.tree.leaves(self.state.params)
            ),
            "devices": len(jax.tree.leaves(self.state.params)[0].sharding.device_set),
        }
        out = original(self)
        (step,) = self.step_fn.executables.values()
        hlo = step.as_text()  # the compiled step computes across devices: collectives
        seen[self.v["devices"]]["collectives"] = sorted(
            op for op in ("all-reduce", "all-gather", "reduce-scatter") if op in hlo
        )
        return out

    training._Run.train = spy
    prog = ddm.load(path, x64=True)
    report = {}
    for n in (1, 4, "4again"):
        r = ddm.train(prog, devices=4 if n == "4again" else n, plots=False)
        report[str(n)] = {
            "params": {k: np.asarray(v).tolist() for k, v in r.params.items() if k != "psi"}
            | {
                f"psi/{i}": np.asarray(x).ravel().tolist()
                for i, x in enumerate(jax.tree.leaves(r.params["psi"]))
            },
            "test": r.metrics["test"],
            "train": r.metrics["train"],
            "losses": [x["loss"] for x in r.log if "loss" in x],
        }
    report["seen"] = {str(k): v for k, v in seen.items()}
    report["seeds"] = _seeds_spread()
    report["variants"] = _variants_spread(os.path.dirname(out))
    with open(out, "w") as fh:
        json.dump(report, fh)


def _seeds_spread() -> dict:
    """An experiment's seeds vmapped on one device, and spread over four (three seeds: one
    padding seed)."""
    import jax

    from ddm.runtime import devices
    from ddm.runtime import train as training
    from ddm.runtime.experiment import run as running
    from ddm.runtime.experiment import seeds as seeding
    from ddm.runtime.experiment import spec
    from ddm.runtime.program import load

    exp = spec.load(os.path.join(ROOT, "tests", "experiment", "hedge5.yaml"), reduced=True)
    prog = load(exp.program, x64=True)
    cfg = running.config_for(exp, prog, {"n_train": 512, "n_test": 64})
    data = training.load_data(prog, cfg)
    alone = seeding.train_vmapped(prog, cfg, data, [3, 7, 9])
    spread = seeding.train_vmapped(prog, cfg, data, [3, 7, 9], mesh=devices.make_mesh(4))
    flat = [[np.asarray(x).ravel().tolist() for x in jax.tree.leaves(r.params)] for r in alone]
    return {
        "alone": flat,
        "spread": [
            [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(r.params)] for r in spread
        ],
        "seeds": [r.seed for r in spread],
        # where the trained state lived
        "devices": [r.devices for r in spread] + [r.devices for r in alone],
    }


VARIANTS = """\
program: {program}
x64: true
seeds: 2
markets:
  cost1e-3: {{cost: 0.001, n_train: 256, n_test: 64}}
methods:
  slow: {{output: pnl, settings: {{optimizer: {{name: adam, lr: 0.001}}}}}}
  fast: {{output: pnl, settings: {{optimizer: {{name: adam, lr: 0.01}}}}}}
baselines:
  delta: {{node: pnl_delta}}
metrics:
  entropic: {{stat: entropic_risk, better: lower}}
comparisons:
  - {{method: slow, against: [delta, fast]}}
statistics: {{resamples: 100}}
reduced: {{seeds: 2, settings: {{steps: 4}}}}
"""


def _variants_spread(folder: str) -> dict:
    """An experiment of two methods (two training groups) × two seeds on one device, and on
    four: two lanes of two devices, the groups side by side."""
    import jax

    from ddm.runtime.experiment import seeds as seeding
    from ddm.runtime.experiment import spec
    from ddm.runtime.experiment.run import run_experiment

    path = os.path.join(folder, "variants.yaml")
    with open(path, "w") as fh:
        fh.write(VARIANTS.format(program=os.path.join(ROOT, "tests", "experiment", "hedge5.ddm")))
    exp = spec.load(path, reduced=True)
    placed: list = []
    original = seeding.train_seeds

    def spy(prog, cfg, data, seeds, vmap=True, on_step=None, mesh=None):
        out = original(prog, cfg, data, seeds, vmap, on_step, mesh)
        leaves = jax.tree.leaves([r.params for r in out[0]])
        placed.append(sorted({d.id for x in leaves for d in x.devices()}))
        return out

    seeding.train_seeds = spy
    report = {}
    for n in (1, 4):
        placed.clear()
        res = run_experiment(exp, os.path.join(folder, f"variants{n}"), devices=n)
        with np.load(os.path.join(folder, f"variants{n}", "cost1e-3", "paths.npz")) as z:
            values = {k: z[k].tolist() for k in ("slow", "fast")}
        report[str(n)] = {
            "values": values,
            "placed": sorted(placed),
            "training": res["markets"]["cost1e-3"]["training"],
        }
    seeding.train_seeds = original
    return report


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("devices")
    path = folder / "band.ddm"
    path.write_text(BAND)
    out = folder / "report.json"
    code = f"import test_devices; test_devices._worker({str(path)!r}, {str(out)!r})"
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "tests")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), folder


def test_the_batch_is_split_over_the_devices_and_params_are_replicated(runs):
    report, _ = runs
    four = report["seen"]["4"]
    assert four["devices"] == 4 and four["params_replicated"]
    assert four["train_sharded"] and four["train_rows"] == {"S": 1032, "tau": 1032, "cost": 1032}
    assert four["test_replicated"]  # 1001 rows do not divide by 4: every device holds them
    assert "all-reduce" in four["collectives"]  # the loss's reductions and the gradient
    assert report["seen"]["1"]["collectives"] == []


def test_four_devices_train_to_the_one_device_result(runs):
    report, _ = runs
    one, many = report["1"], report["4"]
    for k in one["params"]:
        np.testing.assert_allclose(many["params"][k], one["params"][k], rtol=1e-8, atol=1e-10)
    assert many["losses"] == pytest.approx(one["losses"], rel=1e-9)
    for split in ("train", "test"):  # the padding rows never reach the metrics
        assert many[split] == pytest.approx(one[split], rel=1e-9)


def test_a_fixed_device_count_gives_the_same_bits(runs):
    report, _ = runs
    assert report["4"] == report["4again"]


def test_an_experiments_methods_train_side_by_side_on_lanes_of_devices(runs):
    report, _ = runs
    spread = report["variants"]
    # two methods × two seeds on four devices: two lanes of two, one method on each
    assert spread["4"]["placed"] == [[0, 1], [2, 3]]
    assert spread["1"]["placed"] == [[0], [0]]
    assert all("over 2 devices" in how for how in spread["4"]["training"].values())
    for method in ("slow", "fast"):  # float64: the seeds' split is the only difference
        np.testing.assert_allclose(
            spread["4"]["values"][method], spread["1"]["values"][method], rtol=1e-12
        )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--devices", "3"], "batch 256 does not split evenly over 3 devices"),
        (["--set", "devices=3"], "devices = 3, and JAX sees 1 device (cpu)"),
        (["--devices", "0"], "expected all or a number of devices >= 1"),
        (["--set", "devices=two"], "'devices' must be an integer (a number of devices) or all"),
        (["--distributed", "--devices", "4"], "the number of processes is not given"),
    ],
)
def test_a_device_count_that_cannot_work_is_refused_with_what_to_change(runs, args, message):
    _, folder = runs
    done = _ddmc("train", str(folder / "band.ddm"), "--no-plots", *args, cwd=folder)
    assert done.returncode in (1, 2) and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_an_experiments_seeds_spread_over_the_devices_train_as_on_one(runs):
    report, _ = runs
    seeds = report["seeds"]
    assert seeds["seeds"] == [3, 7, 9]  # the padding seed is dropped
    assert seeds["devices"] == [4, 4, 4, 1, 1, 1]
    for alone, spread in zip(seeds["alone"], seeds["spread"]):
        for a, b in zip(alone, spread):
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


# --- several processes ---------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(path: str, out: str, cwd, *extra: str):
    """``ddmc train`` as two processes on localhost with two CPU devices each (gloo
    collectives); returns both finished processes, process 0 first."""
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "ddm.cli.main", "train", path, "--x64", "--no-plots"]
            + ["--devices", "4", "--out", out, "--coordinator", f"localhost:{port}"]
            + ["--num-processes", "2", "--process-id", str(i), *extra],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=500)
        done.append((p.returncode, stdout, stderr))
    return done


@pytest.fixture(scope="module")
def two(runs):
    """``ddmc train`` of the band program as two processes of two devices each: the folder."""
    _, folder = runs
    out = str(folder / "two")
    (rc0, out0, err0), (rc1, out1, err1) = _two_processes(
        str(folder / "band.ddm"), out, folder, "--set", "checkpoint_every=6"
    )
    assert rc0 == 0 and rc1 == 0, err0[-2000:] + err1[-2000:]
    return out, out0, out1


def test_two_processes_train_to_the_single_process_result_and_only_process_0_writes(runs, two):
    report, folder = runs
    path = str(folder / "band.ddm")
    out, out0, out1 = two
    assert "wrote" in out0 and out1 == ""  # process 1 computes and says nothing
    # against one process with four devices (and so one device: the test above)
    one = report["4"]
    saved = np.load(os.path.join(out, "params.npz"))
    psi = sorted(k for k in saved.files if k.startswith("psi/"))  # b0, b1, w0, w1: leaf order
    assert len(psi) == 4
    for i, k in enumerate(psi):
        np.testing.assert_allclose(
            saved[k].ravel(), one["params"][f"psi/{i}"], rtol=1e-8, atol=1e-10
        )
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["test"] == pytest.approx(one["test"], rel=1e-9)
    assert metrics["config"]["devices"] == 4

    # the checkpoint remembers the topology that wrote it
    again = _ddmc("train", path, "--resume", out, "--set", "steps=20", cwd=folder)
    assert again.returncode == 1, again.stderr
    assert "devices = 4, and JAX sees 1 device" in again.stderr  # the run's own setting
    again = _ddmc("train", path, "--resume", out, "--devices", "2", cwd=folder)
    assert again.returncode == 1 and "this call would change devices" in again.stderr
    again = _ddmc("train", path, "--resume", out, "--devices", "4", "--set", "steps=20", cwd=folder)
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert "written by 2 processes on 4 devices; this run has 1 process on 4 devices" in (
        again.stderr
    )


def test_the_same_two_processes_again_give_the_same_bits(runs, two):
    _, folder = runs
    out = two[0]
    rerun = str(folder / "two_again")
    (rc0, _, err0), (rc1, _, err1) = _two_processes(
        str(folder / "band.ddm"), rerun, folder, "--set", "checkpoint_every=6"
    )
    assert rc0 == 0 and rc1 == 0, err0[-2000:] + err1[-2000:]
    saved, again = (np.load(os.path.join(d, "params.npz")) for d in (out, rerun))
    assert sorted(again.files) == sorted(saved.files)
    for k in saved.files:
        np.testing.assert_array_equal(again[k], saved[k])
    metrics = (json.load(open(os.path.join(d, "metrics.json")))["test"] for d in (out, rerun))
    assert next(metrics) == next(metrics)


IDS = """\
dim N = 5
input path: i32
input tau: f32[N]
input cost: f32
param phi = mlp(2, 4, 1)
node S = gbm_path(path, 0.2, s0=100.0, days=5, steps=5, seed=0)
node x = log(S[0:5] / 100.0) / (0.2 * sqrt(tau))
node h = scan t in N, prev: f32 = 0.0 { phi(stack([x[t], prev]))[0] }
node pnl = hedge_pnl(S, h, cost=cost, strike=100.0, premium=0.936)
loss = entropic_risk(pnl)
metric risk = entropic_risk(pnl)
run {
    data = path_ids(days=5, steps=5, cost=0.01, n_train=1030, n_test=101)
    optimizer = adam(lr=0.01)
    steps = 6
    batch = 256
}
"""

# ``ddmc`` with path_ids' row builder spied on: which rows this process built
SPIED = """\
import json, sys
from ddm.runtime.data import path_ids
built, ids = [], path_ids.SOURCE
def rows(split, start, stop, **kw):
    built.append([split, start, stop])
    return path_ids.rows(split, start, stop, **kw)
def load(**kw):
    built.append(["all"])
    return path_ids.load(**kw)
object.__setattr__(ids, "rows", rows)  # a frozen record: spied on in this process only
object.__setattr__(ids, "load", load)
from ddm.cli.main import main
try:
    code = main(sys.argv[2:])
finally:
    json.dump(built, open(sys.argv[1], "w"))
sys.exit(code)
"""


def test_each_process_builds_only_the_training_rows_its_devices_hold(tmp_path):
    path = tmp_path / "ids.ddm"
    path.write_text(IDS)
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SPIED, str(tmp_path / f"built{i}.json"), "train", str(path)]
            + ["--x64", "--no-plots", "--devices", "4", "--out", str(tmp_path / "two")]
            + ["--coordinator", f"localhost:{port}", "--num-processes", "2"]
            + ["--process-id", str(i)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=500)
        assert p.returncode == 0, stderr[-3000:]
    # 1030 rows padded to 1032 over four devices, two per process: 516 rows each
    built = [json.loads((tmp_path / f"built{i}.json").read_text()) for i in range(2)]
    assert sorted(built[0]) == [["test", 0, 101], ["train", 0, 516]]
    assert sorted(built[1]) == [["test", 0, 101], ["train", 516, 1030]]
    # the same training as one process holding every row
    one = _ddmc("train", str(path), "--x64", "--no-plots", "--devices", "4", "--out", "one",
                cwd=tmp_path)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    two, alone = (np.load(tmp_path / d / "params.npz") for d in ("two", "one"))
    assert sorted(two.files) == sorted(alone.files)
    weights = [k for k in alone.files if alone[k].dtype.kind == "f"]
    assert weights
    for k in weights:
        np.testing.assert_allclose(two[k], alone[k], rtol=1e-8, atol=1e-10)
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("two", "one")]
    assert metrics[0]["test"] == pytest.approx(metrics[1]["test"], rel=1e-9)
    assert metrics[0]["train"] == pytest.approx(metrics[1]["train"], rel=1e-9)
    assert metrics[0]["data"] == metrics[1]["data"]  # described without building it whole


def test_an_experiment_on_more_devices_than_there_are_is_refused_before_anything_runs(tmp_path):
    from ddm.runtime.errors import ConfigDiagnostic
    from ddm.runtime.experiment import spec
    from ddm.runtime.experiment.run import run_experiment

    exp = spec.load(os.path.join(ROOT, "tests", "experiment", "hedge5.yaml"), reduced=True)
    with pytest.raises(ConfigDiagnostic, match="--devices 64: JAX sees 1 device"):
        run_experiment(exp, str(tmp_path / "out"), devices=64)
    assert not os.path.exists(tmp_path / "out")
