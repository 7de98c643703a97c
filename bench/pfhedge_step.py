"""Deep-hedging training step: ddm (examples/deep_hedge.ddm's recurrent ``net`` policy) against
pfhedge (PyTorch), on the same paths, steps and network, measured in the same run.

The problem: a short call, S0 = K = 100, 30 rebalances, proportional cost 1e-3, entropic risk
(λ = 1). The policy: an MLP 3 → 32 → 32 → 1 with ReLU on (log-moneyness, time to maturity,
previous hedge), called step by step because the previous hedge is an input.

- ddm: ``examples/deep_hedge.ddm`` with its loss restricted to the ``net`` policy, one step =
  ``jax.value_and_grad`` of the program's loss + Adam, jitted, as ``ddm.runtime.train`` builds
  it (params and optimiser state donated).
- pfhedge 0.23: ``Hedger(model, ["log_moneyness", "time_to_maturity", "prev_hedge"],
  EntropicRiskMeasure())`` on ``EuropeanOption(BrownianStock(cost=1e-3), strike=100)``; the
  stock's ``spot`` buffer holds ddm's paths, and one step = ``compute_pl`` (pfhedge's own loop
  over dates for state-dependent features) → entropic risk → ``backward`` → Adam, with
  ``torch.set_num_threads(1)`` (its default threading is ~25× slower on this 2-core machine).
  pfhedge's time-to-maturity feature is in years, as ddm's ``tau``; ddm's program additionally
  scales its features, which costs it a few element-wise ops per step.

Both losses are checked to agree at the same params (the networks are initialised identically)
before timing, so the ratio compares two implementations of the same computation. Ratio =
pfhedge step / ddm step (> 1: ddm faster); target ≥ 2. Skipped with a note when torch or
pfhedge is not installed (``make bench`` installs the ``bench`` extra).
"""

from __future__ import annotations

import os
import statistics
import time

NAMES = ("pfhedge",)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 2.0
BATCH, QUICK_BATCH, STEPS_N, COST, PREMIUM = 4096, 1024, 30, 1e-3, 2.2871


def _ddm_program():
    import ddm

    with open(os.path.join(ROOT, "examples", "deep_hedge.ddm"), encoding="utf-8") as fh:
        src = fh.read()
    full = "loss = entropic_risk(pnl_net) + entropic_risk(pnl_band)"
    assert full in src
    # the net policy alone, its features unscaled as pfhedge computes them
    src = src.replace(full, "loss = entropic_risk(pnl_net)")
    src = src.replace("phi(stack([x[t], u[t], prev]))", "phi(stack([logm[t], tau[t], prev]))")
    return ddm.loads(src, file="deep_hedge.ddm")


def _paths(n):
    from ddm.runtime.data.simulated import load_gbm

    d = load_gbm(sigma=0.2, cost=COST, n_train=n, n_test=1, seed=7)
    return {k: d.train[k] for k in ("S", "tau", "cost")}


def _pfhedge(spot, params, device: str = "cpu"):
    # torch and pfhedge are optional peers (the bench extra, which `make bench` installs): where
    # they are absent, bench() skips before calling this and the type check cannot resolve them
    import torch  # pyright: ignore[reportMissingImports]
    from pfhedge.instruments import BrownianStock, EuropeanOption  # pyright: ignore[reportMissingImports]
    from pfhedge.nn import EntropicRiskMeasure, Hedger  # pyright: ignore[reportMissingImports]

    torch.set_num_threads(1)
    stock = BrownianStock(sigma=0.2, cost=COST, dt=1 / 365)
    option = EuropeanOption(stock, strike=100.0, maturity=STEPS_N / 365)
    option.simulate(n_paths=spot.shape[0])  # allocates the buffers; replaced below
    stock.register_buffer("spot", torch.as_tensor(spot, dtype=torch.float32))
    option.to(device)  # its stock and buffers (gpu_check.py: the same GPU as ddm)
    # the Linear layers by name: a Linear's weight and bias are typed Tensors, while the items a
    # Sequential hands back are plain Modules
    layers = [torch.nn.Linear(3, 32), torch.nn.Linear(32, 32), torch.nn.Linear(32, 1)]
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    with torch.no_grad():  # ddm's initial params: y = x @ W + b, torch's: x @ W.T + b
        for layer, (w, b) in zip(layers, params):
            layer.weight.copy_(torch.as_tensor(w.T))
            layer.bias.copy_(torch.as_tensor(b))
    model.to(device)
    hedger = Hedger(
        model, ["log_moneyness", "time_to_maturity", "prev_hedge"], criterion=EntropicRiskMeasure()
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss():
        # pfhedge's P&L has no premium; entropic risk shifts by it exactly
        return hedger.criterion(hedger.compute_pl(option) + PREMIUM)

    def step():
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
        return value

    return loss, step


def bench(quick: bool = False, device: str = "cpu") -> dict:
    """``device``: torch's (``"cuda"`` beside JAX's GPU: gpu_check.py)."""
    try:  # the optional peers (see _pfhedge)
        import pfhedge  # noqa: F401  # pyright: ignore[reportMissingImports]
        import torch  # pyright: ignore[reportMissingImports]
    except ImportError as exc:
        return {
            "name": "deep_hedge.pfhedge",
            "skipped": f"{exc.name} not installed (make bench installs the bench extra)",
        }
    import jax
    import numpy as np
    import optax

    n = QUICK_BATCH if quick else BATCH
    prog = _ddm_program()
    batch = _paths(n)
    params = prog.init(jax.random.key(0))
    phi = params["phi"]
    layers = [(np.asarray(phi[f"w{i}"]), np.asarray(phi[f"b{i}"])) for i in range(3)]
    pf_loss, pf_step = _pfhedge(batch["S"], layers, device)

    opt = optax.adam(1e-3)

    def step(p, s, b):
        (loss, _), g = jax.value_and_grad(prog.product.loss, has_aux=True)(p, b)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    ddm_step = jax.jit(step, donate_argnums=(0, 1))
    loss_ddm = float(prog.loss(params, batch))
    with torch.no_grad():
        loss_pf = float(pf_loss())
    agree = abs(loss_ddm - loss_pf) <= 1e-4 * max(1.0, abs(loss_pf))

    state = (jax.tree.map(lambda a: a.copy(), params), opt.init(params))
    jb = {k: jax.numpy.asarray(a) for k, a in batch.items()}

    def run_ddm(k):
        nonlocal state
        p, s = state
        for _ in range(k):
            p, s, loss = ddm_step(p, s, jb)
        jax.block_until_ready(loss)
        state = (p, s)

    def run_pf(k):
        value = None
        for _ in range(k):
            value = pf_step()
        if device != "cpu" and value is not None:
            value.item()  # waits for the device

    run_ddm(2)
    run_pf(2)
    k, repeats = (5, 3) if quick else (10, 5)
    t_ddm, t_pf = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        t = time.perf_counter()
        run_ddm(k)
        t_ddm.append((time.perf_counter() - t) / k)
        t = time.perf_counter()
        run_pf(k)
        t_pf.append((time.perf_counter() - t) / k)
    ddm_s, pf_s = statistics.median(t_ddm), statistics.median(t_pf)
    return {
        "name": "deep_hedge.pfhedge",
        "batch": n,
        "steps": STEPS_N,
        "ddm_step_s": ddm_s,
        "pfhedge_step_s": pf_s,
        "ratio": pf_s / ddm_s,
        "target_ratio": TARGET,
        "meets_target": pf_s / ddm_s >= TARGET,
        "loss_ddm": loss_ddm,
        "loss_pfhedge": loss_pf,
        "loss_agrees": agree,
        "torch": torch.__version__,
        "pfhedge": __import__("pfhedge").__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_device": device,
    }


def run(quick: bool = False, only: str | None = None) -> list[dict]:
    return [bench(quick) for n in NAMES if not only or only in ("deep_hedge", n, f"deep_hedge.{n}")]


def row(r: dict) -> tuple[str, str, str, str, str, str]:
    if "skipped" in r:
        return (r["name"], "skipped", r["skipped"], "—", f"≥ {TARGET}×", "skipped")
    ok = "[green]ok[/]" if r["meets_target"] else "[yellow]under[/]"
    check = "[green]loss ok[/]" if r["loss_agrees"] else "[red]LOSS MISMATCH[/]"
    return (
        r["name"],
        f"{r['ddm_step_s'] * 1e3:.1f} ms/step",
        f"{r['pfhedge_step_s'] * 1e3:.1f} ms/step (pfhedge)",
        f"{r['ratio']:.2f}× faster",
        f"≥ {TARGET}×",
        f"{ok}, {check}",
    )


def notes(r: dict) -> str | None:
    if "skipped" in r:
        return None
    return (
        f"{r['name']}: batch {r['batch']} paths × {r['steps']} dates, MLP 3-32-32-1, cost "
        f"{COST}, entropic risk; loss ddm {r['loss_ddm']:.6g} vs pfhedge "
        f"{r['loss_pfhedge']:.6g}; torch {r['torch']} with {r['torch_threads']} thread, "
        f"pfhedge {r['pfhedge']}; medians of alternating blocks"
    )
