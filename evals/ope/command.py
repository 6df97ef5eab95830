"""`tagloop eval ope`: off-policy estimates of a target policy from logged feedback (SPEC §6).

Data sources: `--obd DIR [--campaign]` (Open Bandit Dataset; target = Bernoulli TS), and
`--logs DECISIONS.jsonl --policy POLICY.toml` (tagloop's own decision export; target = the
candidate policy, `evals/ope/logs.py`) — both build a `BanditFeedback` and reuse `evaluate`.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tagloop.evals.ope.evaluate import FAMILIES, OpeResult, evaluate
from tagloop.evals.ope.obd import CAMPAIGNS, load_obd
from tagloop.evals.ope.report_page import write_ope_report
from tagloop.evals.report import check_report_dir
from tagloop.tools.errors import InvalidInput, TagloopError

ACTION_DIST_NOTE = (
    "Target policy: the BTS logs' empirical action frequencies per position (the "
    "time-average of BTS's context-free distributions over the logged week, i.e. the "
    "policy that produced the ground truth)."
)


def result_json(result: OpeResult, ground_truth: float | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The SPEC §6 object (ground_truth, estimates, ci95, relative_error, recommended) plus details."""
    out: dict[str, Any] = {
        "ground_truth": ground_truth,
        "estimates": dict(result.estimates),
        "ci95": {k: [lo, hi] for k, (lo, hi) in result.ci95.items()},
        "relative_error": (
            {k: abs(v - ground_truth) / ground_truth for k, v in result.estimates.items()}
            if ground_truth
            else {}
        ),
        "recommended": result.recommended,
        "recommendation_reliable": result.withheld is None,
        **({"recommendation_caveat": result.withheld} if result.withheld else {}),
        "estimated_rmse": {k: v**0.5 for k, v in result.est_mse.items()},
        "params": dict(result.params),
        "diagnostics": dict(result.diagnostics),
    }
    out.update(extra)
    return out


LOGS_NOTE = (
    "Target policy: the candidate POLICY.toml replayed on each logged decision's candidates; a round is "
    "a decision that sent a message, its action the whole slate (exact slate propensities)."
)
LOGS_TOP_NOTE = (
    "Target policy: the candidate POLICY.toml replayed on each logged decision's candidates; a round is "
    "a decision that sent a message, its action the top slot only (exact top-slot propensities)."
)


def logs_note(unit: str) -> str:
    return LOGS_TOP_NOTE if unit == "top" else LOGS_NOTE


def _warn_withheld(result: OpeResult, err: Console, hint: str = "") -> None:
    if result.withheld:
        err.print(
            f"warning: the recommended estimator ({result.recommended}) is only a fallback: "
            f"{result.withheld}{hint}",
            style="yellow",
            soft_wrap=True,
        )


def _bootstrap(fb: Any, dist: np.ndarray, n_boot: int, seed: int, err: Console) -> OpeResult:
    """`evaluate` with its progress on stderr: a bar on a terminal, else a plain line per tenth."""
    rng = np.random.default_rng(seed)
    if not err.is_terminal:
        say = partial(err.print, soft_wrap=True, highlight=False)
        say(f"ope: {fb.n_rounds} rounds; fitting the reward model, then {n_boot} bootstrap replicates")
        done, step = 0, max(1, n_boot // 10)

        def tick() -> None:
            nonlocal done
            done += 1
            if done % step == 0 or done == n_boot:
                say(f"ope: bootstrap {done}/{n_boot}")

        return evaluate(fb, dist, rng, n_boot=n_boot, on_replicate=tick)
    progress = Progress(
        TextColumn("bootstrap"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with progress:
        bar = progress.add_task("bootstrap", total=n_boot)
        return evaluate(fb, dist, rng, n_boot=n_boot, on_replicate=lambda: progress.advance(bar))


def _run_logs(
    logs: Path, policy: Path, n_boot: int, seed: int, report: Path | None, err: Console, unit: str
) -> dict[str, Any]:
    from tagloop.evals.ope.logs import UNITS, load_logs
    from tagloop.policies import load_policy

    cfg = load_policy(policy)
    if unit not in UNITS:
        raise InvalidInput(f"--unit must be one of {', '.join(UNITS)}, got {unit!r}")
    task = load_logs(logs, cfg, "top" if unit == "top" else "slate")
    check = task.replay_check
    if check.mismatched:
        err.print(
            f"warning: {check.mismatched} of {check.rounds} rounds logged by {cfg.name}@"
            f"{cfg.version} do not replay to their logged propensities (the POLICY.toml differs from "
            "the one that logged them, or an input changed since, e.g. item tags): their weights "
            f"are not exact (e.g. decision {check.examples[0]})",
            style="yellow",
        )
    result = _bootstrap(task.feedback, task.action_dist, n_boot, seed, err)
    top_hint = " (try --unit top: the top slot only, far more overlap between unlike policies)"
    weights_collapsed = unit == "slate" and "effective sample size" in (result.withheld or "")
    _warn_withheld(result, err, top_hint if weights_collapsed else "")
    extra = {
        "source": "logs",
        "unit": unit,
        "policy": f"{cfg.name}@{cfg.version}",
        "logged_value": task.logged_value,
        "logging_policies": task.logging_policies,
        "n_decisions": task.n_records,
        "n_rounds": task.feedback.n_rounds,
        "skipped": task.skipped,
        "rounds_target_cannot_show": task.zero_target,
        "replay_check": {
            "rounds": task.replay_check.rounds,
            "mismatched": task.replay_check.mismatched,
            "examples": task.replay_check.examples,
        },
        "n_boot": n_boot,
        "seed": seed,
    }
    if report is not None:
        title = f"Off-policy evaluation of {cfg.name}@{cfg.version} on {logs.name} ({unit})"
        extra["report"] = str(write_ope_report(report, result, None, title, logs_note(unit)))
    return result_json(result, None, extra)


def _table(payload: dict[str, Any]) -> Table:
    truth = payload["ground_truth"]
    table = Table(title="OPE — " + (f"ground truth {truth:.5f}" if truth is not None else "no ground truth"))
    for col in ("estimator", "estimate", "95% CI", "rel. error", "est. RMSE"):
        table.add_column(col, justify="left" if col == "estimator" else "right")
    for name in FAMILIES:
        lo, hi = payload["ci95"][name]
        mark = " ★" if name == payload["recommended"] else ""
        table.add_row(
            name + mark,
            f"{payload['estimates'][name]:.5f}",
            f"[{lo:.5f}, {hi:.5f}]",
            f"{payload['relative_error'].get(name, float('nan')):.3f}",
            f"{payload['estimated_rmse'][name]:.2e}",
        )
    return table


def ope_command(
    obd: Annotated[
        Path | None, typer.Option(help="Open Bandit Dataset dir: {random,bts}/{campaign}/")
    ] = None,
    campaign: Annotated[str, typer.Option(help="OBD campaign: " + "|".join(CAMPAIGNS))] = "all",
    logs: Annotated[Path | None, typer.Option(help="tagloop decision log (JSON Lines)")] = None,
    policy: Annotated[Path | None, typer.Option(help="candidate policy (TOML), with --logs")] = None,
    unit: Annotated[str, typer.Option(help="with --logs: the whole 'slate' or the 'top' slot")] = "slate",
    n_boot: Annotated[
        int, typer.Option(min=20, help="bootstrap replicates (each refits the reward model; ≥ 20)")
    ] = 200,
    seed: Annotated[int, typer.Option(help="seed of folds and bootstrap")] = 0,
    report: Annotated[Path | None, typer.Option(help="write a markdown/HTML page with plots here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """Estimate a target policy's value from logs: OBD's Bernoulli-TS from its random logs, or a
    candidate POLICY.toml from tagloop's decision log (--logs … --policy …)."""
    err = Console(stderr=True, markup=False)
    try:
        payload = _run(obd, campaign, logs, policy, n_boot, seed, report, err, unit)
    except TagloopError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps(payload))
    else:
        Console(markup=False).print(_table(payload))
        note = (
            logs_note(payload.get("unit", "slate")) if payload.get("source") == "logs" else ACTION_DIST_NOTE
        )
        if not payload["recommendation_reliable"]:
            caveat = payload["recommendation_caveat"]
            Console(markup=False).print(
                f"recommended: {payload['recommended']} (fallback — {caveat})  ({note})"
            )
        else:
            Console(markup=False).print(f"recommended: {payload['recommended']}  ({note})")


def _run(
    obd: Path | None,
    campaign: str,
    logs: Path | None,
    policy: Path | None,
    n_boot: int,
    seed: int,
    report: Path | None,
    err: Console,
    unit: str = "slate",
) -> dict[str, Any]:
    if report is not None:
        check_report_dir(report)  # before the data is read and bootstrapped, not after
    if logs is not None or policy is not None:
        if obd is not None:
            raise InvalidInput("give either --obd DIR or --logs FILE --policy FILE, not both")
        if logs is None or policy is None:
            raise InvalidInput("--logs DECISIONS.jsonl and --policy POLICY.toml go together")
        return _run_logs(logs, policy, n_boot, seed, report, err, unit)
    if obd is None:
        raise InvalidInput(
            "give --obd DIR (Open Bandit Dataset layout DIR/{random,bts}/{campaign}/) "
            "or --logs DECISIONS.jsonl --policy POLICY.toml"
        )
    task = load_obd(obd, campaign)
    result = _bootstrap(task.feedback, task.action_dist, n_boot, seed, err)
    _warn_withheld(result, err)
    extra = {
        "campaign": campaign,
        "n_rounds": task.feedback.n_rounds,
        "n_boot": n_boot,
        "seed": seed,
        "action_dist": "bts-empirical-frequency",
    }
    if report is not None:
        path = write_ope_report(
            report,
            result,
            task.ground_truth,
            f"Off-policy evaluation: OBD campaign '{campaign}', BTS from random logs",
            ACTION_DIST_NOTE,
        )
        extra["report"] = str(path)
    return result_json(result, task.ground_truth, extra)
