"""The simulator: the response model reacts to match, fatigue and time of day as documented, the
metrics and their intervals are what the SPEC names, and on real Last.fm users the real agent graph
runs day by day — the same seed giving the same JSON, the random baseline earning less than greedy."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from tagloop.agent.settings import Settings
from tagloop.evals.cli import app
from tagloop.evals.simulate import database as sdb
from tagloop.evals.simulate.command import simulate
from tagloop.evals.simulate.loop import PolicyRun
from tagloop.evals.simulate.metrics import METRICS, summarise
from tagloop.evals.simulate.report_page import write_simulation_report
from tagloop.evals.simulate.response import Deliveries, ResponseModel, respond
from tagloop.evals.simulate.world import World, WorldConfig, fingerprint
from tagloop.tools.errors import InvalidInput
from tagloop.tools.store import db

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC).timestamp()


def toy_world() -> World:
    """Two London users; user 0 loves items 0-2 (listened, hidden), items 3-5 share no tag with anyone."""
    item_tags = sp.csr_matrix(np.array([[1, 0], [1, 0], [1, 0], [0, 0], [0, 0], [0, 0]], dtype=float))
    taste = sp.csr_matrix(np.array([[1.0, 0.9, 0.8, 0, 0, 0], [0, 0, 0, 0, 0, 0]]))
    clock = np.full((2, 24), 0.1)
    clock[:, 12] = 1.0
    return World(
        config=WorldConfig(users=2, seed=0),
        item_ids=[str(i) for i in range(6)],
        providers=[f"p{i}" for i in range(6)],
        item_tags=item_tags,
        user_ids=["a", "b"],
        zones=["Europe/London", "Europe/London"],
        taste=taste,
        observed=sp.csr_matrix((2, 6)),
        user_tags=sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 0.0]])),
        clock=clock,
        long_tail=np.zeros(6, bool),
    )


def deliveries(slate: list[int], n: int, fatigue: float = 0.0, hour: int = 12) -> Deliveries:
    ts = np.full(n, T0 + (hour - 12) * 3600.0)
    return Deliveries(
        np.zeros(n, dtype=np.int64),
        np.tile(np.array(slate), (n, 1)),
        ts,
        np.full(n, fatigue),
        [f"m{i}" for i in range(n)],
    )


def rates(d: Deliveries, seed: int = 0) -> tuple[float, float, float]:
    r = respond(toy_world(), ResponseModel(), d, np.zeros(2), T0 + 86400, np.random.default_rng(seed))
    return float(r.opened.mean()), float(r.reward.mean()), float(r.unsubscribed.mean())


def test_better_matching_slates_are_opened_and_clicked_more() -> None:
    good, bad = rates(deliveries([0, 1, 2], 4000)), rates(deliveries([3, 4, 5], 4000))
    assert good[0] > bad[0] + 0.2 and good[1] > 3 * bad[1]
    assert good[2] < bad[2]


def test_fatigue_lowers_opens_and_raises_unsubscribes() -> None:
    fresh, tired = rates(deliveries([0, 1, 2], 4000, 0.0)), rates(deliveries([0, 1, 2], 4000, 10.0))
    assert tired[0] < fresh[0] - 0.1 and tired[2] > fresh[2]


def test_messages_at_the_users_active_hour_are_opened_more() -> None:
    assert (
        rates(deliveries([0, 1, 2], 4000, hour=12))[0] > rates(deliveries([0, 1, 2], 4000, hour=3))[0] + 0.1
    )


def test_responses_are_seeded_and_timed_after_delivery_within_the_day() -> None:
    d = deliveries([0, 1, 2], 300)
    a = respond(toy_world(), ResponseModel(), d, np.zeros(2), T0 + 86400, np.random.default_rng(7))
    b = respond(toy_world(), ResponseModel(), d, np.zeros(2), T0 + 86400, np.random.default_rng(7))
    np.testing.assert_array_equal(a.event_ts, b.event_ts)
    assert a.event_type == b.event_type and set(a.event_type) <= {
        "open",
        "click",
        "like",
        "skip",
        "unsubscribe",
    }
    assert np.all(a.event_ts >= T0) and np.all(a.event_ts < T0 + 86400)
    assert a.reward.sum() == a.clicks.sum() + a.likes.sum()


def tiny_run() -> PolicyRun:
    """Four users over two days: rewards 2, 0, 4, 0; user 1 unsubscribed; equal provider exposure."""
    return PolicyRun(
        "p",
        reward=np.array([2.0, 0.0, 4.0, 0.0]),
        messages=np.array([2.0, 2.0, 2.0, 0.0]),
        slots=np.array([4.0, 4.0, 4.0, 0.0]),
        tail_slots=np.array([1.0, 0.0, 2.0, 0.0]),
        unsubscribed_day=np.array([-1, 1, -1, -1]),
        daily_reward=np.zeros(2),
        daily_messages=np.zeros(2),
        exposure=[(0, 0, 1.0), (1, 1, 1.0), (2, 2, 1.0), (2, 3, 1.0)],
    )


def test_metrics_follow_their_definitions() -> None:
    run = tiny_run()
    out = summarise(run, days=2, n_providers=4, rng=np.random.default_rng(0), n_boot=50)
    assert out["reward_per_user_day"] == 0.75 and out["notifications_per_user_day"] == 0.75
    assert out["unsubscribe_rate"] == 0.25 and out["long_tail_exposure_share"] == 0.25
    assert out["exposure_gini"] == 0.0  # every provider got the same exposure
    for m in METRICS:
        lo, hi = out["ci95"][m]
        assert lo <= out[m] <= hi


def test_report_page_has_the_table_and_three_figures(tmp_path: Path) -> None:
    run = tiny_run()
    payload = {
        "users": 4,
        "days": 2,
        "seed": 0,
        "policies": {"p": summarise(run, 2, 6, np.random.default_rng(0))},
    }
    page = write_simulation_report(tmp_path, payload, toy_world(), {"p": run})
    text = page.read_text(encoding="utf-8")
    assert "| p |" in text and "reward_per_user_day" in text
    for name in ("reward_over_time", "exposure_lorenz", "metrics"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000 and f"{name}.png" in text


@pytest.mark.realdata
@pytest.mark.slow
def test_simulated_ab_runs_the_real_graph_and_the_same_seed_gives_the_same_json(
    lastfm_dir: Path, pg_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First through `simulate`, then again through `tagloop eval simulate --json --report`."""
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=pg_admin_url)
    first, world, runs = simulate(
        settings, users=30, days=2, files=None, seed=3, data=lastfm_dir, jobs=1, max_items=2000
    )
    monkeypatch.setenv("TAGLOOP_HOME", str(home))
    monkeypatch.setenv("TAGLOOP_DATABASE_URL", pg_admin_url)
    monkeypatch.delenv("TAGLOOP_CONFIG", raising=False)
    args = [
        "simulate",
        "--users",
        "30",
        "--days",
        "2",
        "--seed",
        "3",
        "--data",
        str(lastfm_dir),
        "--jobs",
        "1",
        "--catalogue",
        "2000",
        "--json",
        "--report",
        str(tmp_path / "report"),
    ]
    out = CliRunner().invoke(app, args)
    sdb.drop(pg_admin_url, sdb.template_name(world, fingerprint(lastfm_dir)))
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.strip().splitlines()[-1]) == first  # same seed, same JSON
    assert (tmp_path / "report" / "index.md").exists()
    assert (first["users"], first["days"], first["seed"]) == (30, 2, 3)
    assert list(first["policies"]) == ["default", "random", "greedy"]
    for values in first["policies"].values():
        assert set(values) == {*METRICS, "ci95"}
        assert 0.5 < values["notifications_per_user_day"] <= 1.0  # daily runs, holdout and guards aside
    greedy, random = (first["policies"][p]["reward_per_user_day"] for p in ("greedy", "random"))
    assert greedy > random
    assert all(r.outcomes.get("message", 0) > 0 for r in runs.values())


def test_the_gini_interval_holds_the_point_although_resampling_concentrates_exposure() -> None:
    rng = np.random.default_rng(1)
    n = 200
    exposure = [(u, int(p), 1.0) for u in range(n) for p in rng.integers(0, 1000, 3)]
    ones = np.ones(n)
    run = PolicyRun("p", ones, ones, 3 * ones, ones, np.full(n, -1), np.zeros(1), np.zeros(1), exposure)
    out = summarise(run, days=1, n_providers=1000, rng=np.random.default_rng(0), n_boot=100)
    lo, hi = out["ci95"]["exposure_gini"]
    assert lo < out["exposure_gini"] < hi and hi - lo < 0.05


@pytest.mark.realdata
@pytest.mark.slow
def test_the_same_seed_gives_the_same_json_on_worlds_built_from_scratch(
    lastfm_dir: Path, pg_admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default (`--exact`): a rebuilt world database gets another pgvector HNSW graph (its node
    levels come from the server's unseedable PRNG), so the agent's tag search — and the JSON —
    changed with every fresh home or `--fresh-world`; an exact world has no HNSW index and its
    agents search tags in their process. Two fresh homes here, each converting the data and building
    the world database anew."""
    from tagloop.tools import tag_exact

    searched = []
    top = tag_exact.TagCatalogue.top
    monkeypatch.setattr(tag_exact.TagCatalogue, "top", lambda *a: searched.append(1) or top(*a))
    outputs = []
    for home in ("a", "b"):
        settings = Settings(home=tmp_path / home, database_url=pg_admin_url)
        payload, world, _ = simulate(
            settings,
            users=12,
            days=2,
            files=None,
            seed=5,
            data=lastfm_dir,
            jobs=1,
            fresh_world=True,
            max_items=4000,
        )
        outputs.append(json.dumps(payload))
    name = sdb.template_name(world, fingerprint(lastfm_dir), exact=True)
    try:
        with psycopg.connect(db.with_dbname(pg_admin_url, name)) as conn:
            hnsw = conn.execute(
                "select c.relname from pg_class c join pg_am a on a.oid = c.relam where a.amname = 'hnsw'"
            ).fetchall()
    finally:
        sdb.drop(pg_admin_url, name)
    assert outputs[0] == outputs[1]
    assert hnsw == []  # exact tag search: the JSON cannot depend on a randomly built graph
    assert searched  # … in the agents' processes (jobs=1: this one)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "--seed must be 0 or more"),
        (["--days", "0"], "--days must be at least 1"),
        (["--users", "0"], "--users must be at least 1"),
        (["--jobs", "-1"], "--jobs must be 0 (one process per policy, at most 2 per core) or more"),
        (["--catalogue", "0"], "--catalogue must be at least 1"),
        (["--report", "afile"], "report directory afile exists and is not a directory"),
        (["--policy", "p.toml", "--policy", "./p.toml"], "p.toml: policy 'x' is given twice"),
    ],
)
def test_bad_options_exit_2_before_any_work(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--jobs -1 was a ValueError traceback from the process pool, --catalogue 0 ran on the full
    catalogue's cached world, --users 0 and a --report file failed only after the world was built,
    and one file given twice ran twice (as `x` and `x(p)`). Here nothing may be built: the data
    dir holds an empty user_artists.dat and the database URL leads nowhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAGLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TAGLOOP_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "user_artists.dat").write_text("", encoding="utf-8")
    (tmp_path / "afile").write_text("", encoding="utf-8")
    (tmp_path / "p.toml").write_text('name = "x"\n', encoding="utf-8")
    base = ["simulate", "--users", "5", "--days", "1", "--data", "data"]
    result = CliRunner().invoke(app, [*base, *args, "--json"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert "building the world" not in result.stderr
    assert not (tmp_path / "home" / "simulate").exists()


def test_a_bad_setting_is_one_line_without_its_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command built Settings() itself: pydantic's error went out whole, the URL's token with it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAGLOOP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TAGLOOP_LLM_BASE_URL", "ftp://user:S3CRETTOKEN@llm.example.com/v1")
    monkeypatch.setenv("TAGLOOP_LLM_MODEL", "m")
    result = CliRunner().invoke(app, ["simulate", "--users", "1", "--days", "1", "--json"])
    assert result.exit_code == 2, result.output
    assert "llm_base_url: Value error, must be an http(s)://host/… URL" in result.stderr
    assert "S3CRETTOKEN" not in result.output


def test_the_world_key_and_the_catalogue_agree_on_what_a_smaller_catalogue_is() -> None:
    """`max_items or 'all'` keyed --catalogue 0 as the full catalogue's cached world while
    build_world cut the catalogue; now a catalogue of fewer than 1 item is refused where it is made."""
    assert WorldConfig(users=5, seed=0).key() != WorldConfig(users=5, seed=0, max_items=1).key()
    for bad in (0, -3):
        with pytest.raises(InvalidInput, match="--catalogue must be at least 1"):
            WorldConfig(users=5, seed=0, max_items=bad)
