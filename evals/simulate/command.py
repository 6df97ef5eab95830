"""`tagloop eval simulate`: a simulated A/B test of policy files (SPEC §6).

    tagloop eval simulate --users 1000 --days 30 [--policy A.toml --policy B.toml] [--seed 0] [--json]

Without `--policy` the shipped presets run side by side: `default` against the `random` and
`greedy` baselines. Each policy gets its own copy of the same world database (same seed → same
world, same user draws), runs in its own process (`--jobs`), and the results are reduced to the
SPEC metrics with bootstrap intervals over users. Same seed → same JSON; progress and timings go
to stderr. `--report DIR` writes a page with reward over time, Lorenz curves and the table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from tagloop.agent.settings import Settings, load_settings
from tagloop.evals.report import check_report_dir
from tagloop.evals.simulate.response import ResponseModel
from tagloop.policies import load_policy
from tagloop.tools.errors import InvalidInput, TagloopError

if TYPE_CHECKING:  # the agent and the world load on use, keeping `tagloop eval --help` quick
    from tagloop.evals.simulate.loop import PolicyRun
    from tagloop.evals.simulate.world import World

BASELINES = ("default", "random", "greedy")
DATA_CANDIDATES = (
    Path("../shared/data/lastfm-2k"),
    Path(__file__).resolve().parents[3] / "shared/data/lastfm-2k",
)


@dataclass(frozen=True)
class Arm:
    name: str
    file: Path | None  # None: the default policy (settings without policy_file)


def arms_of(files: list[Path] | None) -> list[Arm]:
    """The policies to compare, named by their `name` field (the file stem breaks a tie)."""
    if not files:
        root = resources.files("tagloop.policies").joinpath("presets")
        return [Arm(n, Path(str(root.joinpath(f"{n}.toml")))) for n in BASELINES]
    arms: list[Arm] = []
    seen: set[Path] = set()
    for f in files:
        name = load_policy(f).name
        if f.resolve() in seen:
            raise InvalidInput(f"{f}: policy {name!r} is given twice")
        seen.add(f.resolve())
        if any(a.name == name for a in arms):
            name = f"{name}({f.stem})"
        if any(a.name == name for a in arms):
            raise InvalidInput(f"{f}: policy {name!r} is given twice")
        arms.append(Arm(name, f))
    return arms


def find_data(data: Path | None) -> Path:
    for path in [data] if data else DATA_CANDIDATES:
        if path is not None and (path / "user_artists.dat").exists():
            return path
    where = data or DATA_CANDIDATES[0]
    raise InvalidInput(f"no HetRec Last.fm-2k data at {where}; give --data DIR (with user_artists.dat, …)")


def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _run_arm(args: tuple[World, Arm, int, str, str, Settings, ResponseModel, int, bool, str]) -> PolicyRun:
    """One policy in its own cloned database (a worker process's whole job)."""
    from tagloop.evals.simulate import database as sdb
    from tagloop.evals.simulate.loop import run_policy

    world, arm, days, url, template, settings, model, seed, keep, name = args
    dest = sdb.clone(url, template, name)
    try:
        return run_policy(world, arm.name, arm.file, days, dest, settings, model, seed, log=_log)
    finally:
        if not keep:
            sdb.drop(url, name)


def simulate(
    settings: Settings,
    *,
    users: int,
    days: int,
    files: list[Path] | None,
    seed: int,
    data: Path | None = None,
    jobs: int = 0,
    fresh_world: bool = False,
    exact: bool = True,
    keep_databases: bool = False,
    model: ResponseModel | None = None,
    max_items: int | None = None,
) -> tuple[dict[str, Any], World, dict[str, PolicyRun]]:
    """Run the A/B test; returns the SPEC JSON object, the world and every policy's raw run."""
    from tagloop.evals.simulate import database as sdb
    from tagloop.evals.simulate.metrics import summarise
    from tagloop.evals.simulate.world import WorldConfig, build_world, fingerprint

    if days < 1:
        raise InvalidInput(f"--days must be at least 1, got {days}")
    if seed < 0:
        raise InvalidInput(f"--seed must be 0 or more, got {seed}")
    if jobs < 0:
        raise InvalidInput(
            f"--jobs must be 0 (one process per policy, at most 2 per core) or more, got {jobs}"
        )
    cfg = WorldConfig(users=users, seed=seed, max_items=max_items)  # checks --users and --catalogue
    arms = arms_of(files)
    if exact:  # every policy's agent searches tags exactly, in its process (tools/tag_exact.py)
        settings = settings.model_copy(update={"tag_search": "exact"})
    lastfm = find_data(data)
    model = model or ResponseModel()
    url = sdb.admin_url(settings)
    with tempfile.TemporaryDirectory(prefix="tagloop-sim-") as tmp:
        _log(f"building the world: {users} Last.fm users (seed {seed})")
        world = build_world(lastfm, cfg, Path(tmp), cache_dir=settings.home / "simulate")
        template = sdb.ensure_template(
            url,
            world,
            fingerprint(lastfm),
            half_life_days=settings.profile_half_life_days,
            fresh=fresh_world,
            exact=exact,
            log=_log,
        )
    tasks = [
        (
            world,
            a,
            days,
            url,
            template,
            settings,
            model,
            seed,
            keep_databases,
            f"{template}_p{i}_{os.getpid()}",
        )
        for i, a in enumerate(arms)
    ]
    # Every policy in its own process by default (up to two per core): 3 policies on 2 cores
    # finish in ~1.5 policy-times instead of 2 with one process per core.
    jobs = jobs or min(len(arms), 2 * (os.cpu_count() or 1))
    if jobs == 1:
        runs = [_run_arm(t) for t in tasks]
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(_run_arm, tasks))
    n_providers = len(set(world.providers))
    policies = {
        run.name: summarise(run, days, n_providers, np.random.default_rng([seed, 4, i]))
        for i, run in enumerate(runs)
    }
    for run in runs:
        _log(f"{run.name}: " + ", ".join(f"{k} {v:.1f}s" for k, v in run.timings.items()))
    payload = {"users": users, "days": days, "seed": seed, "policies": policies}
    return payload, world, {r.name: r for r in runs}


def simulate_command(
    users: Annotated[int, typer.Option(help="simulated users (sampled from Last.fm)")] = 1000,
    days: Annotated[int, typer.Option(help="simulated days")] = 30,
    policy: Annotated[list[Path] | None, typer.Option(help="POLICY.toml to compare (repeatable)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the world, the policies' draws and the users")] = 0,
    data: Annotated[Path | None, typer.Option(help="HetRec Last.fm-2k directory")] = None,
    jobs: Annotated[int, typer.Option(help="parallel policies (0: one process each, ≤2 per core)")] = 0,
    report: Annotated[Path | None, typer.Option(help="write a markdown/HTML page with plots here")] = None,
    fresh_world: Annotated[bool, typer.Option(help="rebuild the cached world database")] = False,
    exact: Annotated[
        bool,
        typer.Option(
            "--exact/--fast",
            help="--exact (default): exact tag search in the process and no HNSW index in the world, "
            "so the same seed gives the same JSON on any machine and after --fresh-world; --fast: "
            "pgvector's HNSW index, the same JSON only while the cached world is reused",
        ),
    ] = True,
    keep_databases: Annotated[bool, typer.Option(help="keep each policy's database for inspection")] = False,
    catalogue: Annotated[
        int | None, typer.Option(help="smaller catalogue: the users' artists plus a sample, N in all")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
) -> None:
    """Simulated A/B test of policies on Last.fm users (without --policy: default vs random vs greedy)."""
    try:
        if report is not None:
            check_report_dir(report)  # before the simulation, not after it
        payload, world, runs = simulate(
            load_settings(),
            users=users,
            days=days,
            files=policy,
            seed=seed,
            data=data,
            jobs=jobs,
            fresh_world=fresh_world,
            exact=exact,
            keep_databases=keep_databases,
            max_items=catalogue,
        )
        if report is not None:
            from tagloop.evals.simulate.report_page import write_simulation_report

            path = write_simulation_report(report, payload, world, runs)
            _log(f"report: {path}")
    except TagloopError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps(payload))
        return
    from rich.console import Console
    from rich.table import Table

    from tagloop.evals.simulate.metrics import METRICS

    table = Table(title=f"Simulated A/B: {users} users × {days} days, seed {seed}")
    table.add_column("policy")
    for m in METRICS:
        table.add_column(m.replace("_", " "), justify="right")
    for name, vals in payload["policies"].items():
        table.add_row(
            name, *(f"{vals[m]:.4f} [{vals['ci95'][m][0]:.4f}, {vals['ci95'][m][1]:.4f}]" for m in METRICS)
        )
    Console(markup=False).print(table)
