"""An experiment's figures (matplotlib, Agg): learning curves with seed bands, gradient-norm
traces, P&L distributions per volatility regime, and the effect-size forest plot. Each is drawn
from results.json's content and the per-path values in ``MARKET/paths.npz``."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["draw"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(ax, curves, key: str, label: str) -> bool:
    """Median over seeds with the min–max band, at the steps every seed logged."""
    if key.startswith("test:"):  # a test metric the loop evaluated every eval_every steps
        name = key[5:]
        series = [
            {x["step"]: x["test"][name] for x in c if name in x.get("test", {})} for c in curves
        ]
    else:
        series = [{x["step"]: x[key] for x in c if x.get(key) is not None} for c in curves]
    steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not steps:
        return False
    y = np.array([[s[t] for t in steps] for s in series], np.float64)
    line = ax.plot(steps, np.median(y, axis=0), label=f"{label} ({len(series)} seeds)")[0]
    if len(series) > 1:
        ax.fill_between(steps, y.min(axis=0), y.max(axis=0), alpha=0.2, color=line.get_color())
    return True


def draw(exp, results: dict, folder: str) -> list[str]:
    plt = _plt()
    os.makedirs(folder, exist_ok=True)
    out: list[str] = []
    learned = [m.name for m in exp.methods]
    for market, r in results["markets"].items():
        tag = "" if len(results["markets"]) == 1 else f"_{market}"
        curves = r.get("curves", {})
        panels = [
            ("loss", "training loss", "learning_curves"),
            ("grad_norm", "gradient norm", "gradient_norms"),
        ]
        target = (exp.scorecard.get("hybrid_efficiency") or {}).get("metric")
        if target:
            panels.append((f"test:{target}", f"test {target}", "test_curves"))
        for key, title, name in panels:
            fig, ax = plt.subplots(figsize=(7, 4))
            drawn = [_band(ax, curves[m], key, m) for m in learned if m in curves]
            if any(drawn):
                ax.set_xlabel("step")
                ax.set_ylabel(title)
                if key == "grad_norm":
                    ax.set_yscale("log")
                ax.set_title(
                    f"{exp.name}: {title} (median, min–max over seeds)"
                    + (f" — {market}" if tag else "")
                )
                ax.legend(fontsize=8)
                path = os.path.join(folder, f"{name}{tag}.png")
                fig.savefig(path, dpi=110, bbox_inches="tight")
                out.append(path)
            plt.close(fig)

        comps = r.get("comparisons", [])
        rows = [c for c in comps if c.get("hedges_g") is not None]
        if rows:
            fig, ax = plt.subplots(figsize=(7, 0.4 * len(rows) + 1.2))
            seen = set()
            labels = []
            for c in rows:
                key = (c["method"], c["against"])
                if key in seen:
                    continue
                seen.add(key)
                labels.append(f"{c['method']} vs {c['against']}")
                lo, hi = c["hedges_g_ci"]
                y = len(labels) - 1
                ax.plot([lo, hi], [y, y], color="tab:blue")
                ax.plot([c["hedges_g"]], [y], "o", color="tab:blue")
            ax.set_yticks(range(len(labels)), labels, fontsize=8)
            ax.axvline(0.0, color="grey", lw=0.8)
            for t in (-0.3, 0.3):
                ax.axvline(t, color="tab:red", lw=0.8, ls="--")
            ax.set_xlabel(
                "paired Hedges' g, 95 % bootstrap interval (of the Sharpe difference for a "
                "Sharpe metric); ±0.3 dashed"
            )
            ax.invert_yaxis()
            path = os.path.join(folder, f"effect_sizes{tag}.png")
            fig.savefig(path, dpi=110, bbox_inches="tight")
            out.append(path)
            plt.close(fig)

        paths_file = os.path.join(os.path.dirname(folder), market, "paths.npz")
        if os.path.exists(paths_file):
            with np.load(paths_file) as z:
                values = {k: z[k] for k in z.files if not k.startswith("_")}
                regime = z["_regime"] if "_regime" in z.files else None
            names = list(values)
            fig, ax = plt.subplots(figsize=(7, 4))
            lo, hi = np.quantile(
                np.concatenate([v.ravel() for v in values.values()]), [0.005, 0.995]
            )
            bins = np.linspace(lo, hi, 80)
            for n in names:
                ax.hist(np.clip(values[n][0], lo, hi), bins=bins, histtype="step", label=n)
            ax.set_xlabel("per-path P&L (first seed; clipped to the 0.5–99.5 % range)")
            ax.set_ylabel("paths")
            ax.legend(fontsize=8)
            path = os.path.join(folder, f"pnl{tag}.png")
            fig.savefig(path, dpi=110, bbox_inches="tight")
            out.append(path)
            plt.close(fig)
            if regime is not None and "regimes" in r:
                reg = r["regimes"]
                fig, axes = plt.subplots(1, 4, figsize=(12, 4), sharey=True)
                for k, ax in enumerate(axes):
                    sel = regime == k
                    data = [np.clip(values[n][0][sel], lo, hi) for n in names]
                    if sel.sum():
                        ax.boxplot(data, showfliers=False)
                    ax.set_xticks(range(1, len(names) + 1), names, rotation=60, fontsize=7)
                    ax.set_title(f"{reg['regimes'][k]} ({int(sel.sum())} paths)", fontsize=9)
                axes[0].set_ylabel("per-path P&L (first seed)")
                fig.suptitle("P&L by realised-volatility regime (0–25, 25–75, 75–95, 95–100 %)")
                path = os.path.join(folder, f"pnl_by_regime{tag}.png")
                fig.savefig(path, dpi=110, bbox_inches="tight")
                out.append(path)
                plt.close(fig)
    return out
