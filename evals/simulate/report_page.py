"""The `--report DIR` page of `tagloop eval simulate`: the metrics table, reward per user and day
over time for each policy, Lorenz curves of provider exposure, and every metric with its 95%
interval side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tagloop.evals.report import Cell, Report, new_figure
from tagloop.evals.simulate.loop import PolicyRun
from tagloop.evals.simulate.metrics import METRICS, lorenz
from tagloop.evals.simulate.response import ResponseModel
from tagloop.evals.simulate.world import World


def _table(payload: dict[str, Any], runs: dict[str, PolicyRun]) -> list[dict[str, Cell]]:
    rows: list[dict[str, Cell]] = []
    for name, vals in payload["policies"].items():
        row: dict[str, Cell] = {"policy": name}
        for m in METRICS:
            lo, hi = vals["ci95"][m]
            row[m] = f"{vals[m]:.4f} [{lo:.4f}, {hi:.4f}]"
        outcomes = runs[name].outcomes
        row["decisions"] = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        rows.append(row)
    return rows


def write_simulation_report(
    directory: Path, payload: dict[str, Any], world: World, runs: dict[str, PolicyRun]
) -> Path:
    """Write DIR/index.md (+ .html) with the table and three PNG figures; returns the markdown path."""
    n, days = payload["users"], payload["days"]
    report = Report(directory, title=f"Simulated A/B test: {n} users × {days} days (seed {payload['seed']})")
    report.add_text(
        "Simulated users are Last.fm users: their true taste is their whole listening profile, tagloop "
        "sees part of it as history. Every policy ran the real agent graph day by day in its own copy of "
        "the same world; messages were answered by the response model "
        f"({ResponseModel.__name__}: match, local time of day, fatigue, unsubscribe hazard). "
        "Reward = clicks + likes. Intervals: 95% bootstrap over users."
    )
    report.add_heading("Metrics")
    report.add_table(_table(payload, runs))

    fig = new_figure(7.5, 4.0)
    ax = fig.axes[0]
    x = np.arange(1, days + 1)
    for name, run in runs.items():
        ax.plot(x, run.daily_reward / n, marker="o", markersize=3, label=name)
    ax.set_xlabel("day")
    ax.set_ylabel("reward per user")
    ax.set_title("Reward per user and day")
    ax.legend(loc="best")
    report.add_figure(fig, "reward_over_time", "Clicks + likes per user on each simulated day.")

    fig = new_figure(10.0, 4.6)
    fig.clear()
    panels = fig.subplots(1, 2)
    n_providers = len(set(world.providers))
    for ax, exposed_only in zip(panels, (False, True), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="equal exposure")
        for name, run in runs.items():
            lx, ly = lorenz(run, n_providers, exposed_only)
            gini = payload["policies"][name]["exposure_gini"]
            ax.plot(lx, ly, label=f"{name} (Gini {gini:.3f})" if not exposed_only else name)
        ax.set_xlabel("share of providers (least exposed first)")
        ax.set_ylabel("share of exposure")
        ax.set_title("whole catalogue" if not exposed_only else "providers shown at least once")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    report.add_figure(
        fig,
        "exposure_lorenz",
        "Lorenz curves of position-weighted provider exposure (Gini over the catalogue).",
    )

    fig = new_figure(10.0, 3.2)
    fig.clear()
    axes = fig.subplots(1, len(METRICS))
    names = list(payload["policies"])
    for ax, m in zip(axes, METRICS, strict=True):
        vals = np.array([payload["policies"][p][m] for p in names])
        lo = vals - np.array([payload["policies"][p]["ci95"][m][0] for p in names])
        hi = np.array([payload["policies"][p]["ci95"][m][1] for p in names]) - vals
        ax.errorbar(
            np.arange(len(names)), vals, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o", capsize=4
        )
        ax.set_xticks(np.arange(len(names)), names, rotation=30)
        ax.set_title(m.replace("_", " "), fontsize=8)
    fig.tight_layout()
    report.add_figure(fig, "metrics", "Each metric with its 95% bootstrap interval over users.")
    return report.write()
