"""The `--report DIR` page of `tagloop eval ope`: estimator error bars vs the ground truth, and why
the recommended estimator wins (variance of the importance weights, estimated reward-model bias)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tagloop.evals.ope.evaluate import FAMILIES, OpeResult
from tagloop.evals.report import Report, new_figure


def _reasoning(result: OpeResult) -> str:
    d, rec = result.diagnostics, result.recommended
    lines: list[str] = [
        f"The target policy's importance weights on the {d['n_rounds']:.0f} logged rounds have mean "
        f"{d['mean_weight']:.3f} and maximum {d['max_weight']:.2f}; their effective sample size is "
        f"{d['effective_sample_size']:.0f} rounds, holding {d['n_positive_rewards']:.0f} positive rewards. "
        "IPS, SNIPS and DR are (nearly) unbiased but inherit the variance of those weights; DM has the "
        "variance of the reward model only, and a bias nobody can see without an unbiased reference.",
        "Rule (no ground truth): estimated MSE = bootstrap variance + estimated squared bias, where the "
        "squared bias of a model-based estimator E is max(0, (E − DR)² − Var_boot(E − DR)) and IPS/DR "
        "count as unbiased. Switch-DR's τ and DR-OS's λ are tuned by the same rule "
        f"(τ = {result.params['switch_dr_tau']:g}, λ = {result.params['dr_os_lambda']:g}).",
    ]
    if result.withheld:
        lines.append(
            f"**Recommended: {rec}, as a fallback only**: the rule above was not applied "
            "(see the top of the page); DM is the one estimator that does not rest on the importance "
            "weights."
        )
    else:
        lines.append(
            f"**Recommended: {rec}** — estimated RMSE {result.est_mse[rec] ** 0.5:.2e} "
            f"(bootstrap sd {result.std[rec]:.2e}, estimated bias {result.bias2[rec] ** 0.5:.2e}), against "
            f"DR's {result.est_mse['dr'] ** 0.5:.2e} and DM's {result.est_mse['dm'] ** 0.5:.2e}."
        )
    return "\n\n".join(lines)


def write_ope_report(
    directory: Path, result: OpeResult, ground_truth: float | None, title: str, notes: str = ""
) -> Path:
    """Write DIR/index.md (+ .html) with the estimates table, an error-bar PNG and the reasoning."""
    report = Report(directory, title=title)
    if result.withheld:  # first, before any number a reader could take at face value
        why = result.withheld[0].upper() + result.withheld[1:]
        report.add_text(f"**The recommended estimator ({result.recommended}) is only a fallback.** {why}.")
    if notes:
        report.add_text(notes)
    report.add_heading("Estimates")
    rows = []
    for name in FAMILIES:
        lo, hi = result.ci95[name]
        row: dict[str, str | float | None] = {
            "estimator": name + (" (recommended)" if name == result.recommended else ""),
            "estimate": result.estimates[name],
            "ci95 low": lo,
            "ci95 high": hi,
            "bootstrap sd": result.std[name],
            "est. bias": result.bias2[name] ** 0.5,
            "est. RMSE": result.est_mse[name] ** 0.5,
        }
        if ground_truth:
            row["relative error"] = abs(result.estimates[name] - ground_truth) / ground_truth
        rows.append(row)
    report.add_table(rows)

    fig = new_figure(7.5, 4.0)
    ax = fig.axes[0]
    x = np.arange(len(FAMILIES))
    values = np.array([result.estimates[n] for n in FAMILIES])
    lows = values - np.array([result.ci95[n][0] for n in FAMILIES])
    highs = np.array([result.ci95[n][1] for n in FAMILIES]) - values
    colors = ["tab:red" if n == result.recommended else "tab:blue" for n in FAMILIES]
    for i in range(len(FAMILIES)):
        ax.errorbar(x[i], values[i], yerr=[[lows[i]], [highs[i]]], fmt="o", capsize=5, color=colors[i])
    if ground_truth is not None:
        ax.axhline(ground_truth, color="black", linestyle="--", label="ground truth (on-policy)")
        ax.legend(loc="best")
    ax.set_xticks(x, list(FAMILIES))
    ax.set_ylabel("estimated policy value")
    ax.set_title("Estimates with 95% bootstrap intervals (red: recommended)")
    caption = "Point estimates and 95% bootstrap intervals"
    report.add_figure(
        fig, "estimates", caption + ("; dashed: ground truth." if ground_truth is not None else ".")
    )

    report.add_heading("Why this estimator")
    report.add_text(_reasoning(result))
    return report.write()
