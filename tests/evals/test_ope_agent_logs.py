"""OPE on decisions the agent really made: the logging policy evaluated on its own export must get
importance weight 1 on every round (both units) and IPS = SNIPS = the logged value. The default
policy's slate reads more than the candidate arrays (long-tail flags, provider exposure, item tags
for MMR), so this fails whenever the export or the replay drops or recomputes one of them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from tagloop.agent.runner import run_users
from tagloop.agent.settings import Settings
from tagloop.evals.ope.estimators import importance_weight, ips, snips
from tagloop.evals.ope.logs import load_logs
from tagloop.policies import preset
from tagloop.policies.diversity import MMRState, UnitRowsArray, unit_length_entries, unit_length_rows
from tagloop.tools.errors import InvalidInput
from tagloop.tools.messaging.channels import FileChannel
from tagloop.tools.store.decision_log import iter_decision_log
from tests.agent.agent_support import load_demo

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)


@pytest.fixture
def agent_log(db: psycopg.Connection[Any], tmp_path: Path) -> list[dict[str, Any]]:
    """Two runs of the default policy over demo users (the second sees the first's provider
    exposure), opens for every other message, exported as `tagloop decisions export` does."""
    users = load_demo(db, tmp_path / "demo", NOW, users=16)
    settings = Settings(home=tmp_path / "home", candidate_sources=["tags", "trending"])
    channels = {"file": FileChannel(tmp_path / "inbox.jsonl")}
    for hours, key in ((0, "first"), (5, "second")):
        now = NOW + timedelta(hours=hours)
        run_users(db, settings, users, send_now=False, now=now, run_key=key, channels=channels)
    messages = db.execute("select id, user_id from messages order by id").fetchall()
    for m in messages[::2]:
        db.execute(
            "insert into events (id, user_id, type, ts, message_id) values (%s, %s, 'open', %s, %s)",
            (f"open-{m['id']}", m["user_id"], NOW + timedelta(hours=6), str(m["id"])),
        )
    db.commit()
    return list(iter_decision_log(db))


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_the_logging_policy_replays_its_own_decisions_with_weight_one(
    agent_log: list[dict[str, Any]], tmp_path: Path
) -> None:
    sent = [r for r in agent_log if r["context"]["outcome"] == "message"]
    assert len(sent) >= 20 and 0 < sum(r["reward"] for r in sent) < len(sent)
    cands = [c for r in sent for c in r["candidates"]]
    # the inputs the default policy reads beyond scores are really in play
    assert any(c["long_tail"] for c in cands) and any(c["exposure"] > 0 for c in cands)
    assert all("tags" in c for c in cands) and all("replay" not in r["context"]["slate"] for r in sent)
    assert any(min(r["propensities"]) < 0.5 for r in sent)  # some slots explored

    logs = write(tmp_path / "decisions.jsonl", agent_log)
    cfg = preset("default")
    for unit in ("slate", "top"):
        task = load_logs(logs, cfg, unit=unit)  # type: ignore[arg-type]
        fb = task.feedback
        args = (fb.reward, fb.action, fb.position, fb.pscore, task.action_dist)
        np.testing.assert_allclose(importance_weight(*args[1:]), 1.0, rtol=1e-12, atol=0)
        assert task.replay_check.rounds == len(sent) and task.replay_check.mismatched == 0
        assert task.logged_value == pytest.approx(np.mean([r["reward"] for r in sent]), rel=1e-15)
        assert ips(*args).mean() == pytest.approx(task.logged_value, rel=1e-12)
        assert snips(*args).mean() == pytest.approx(task.logged_value, rel=1e-12)

    # another exploration rate: weights move off 1 but stay sensible
    other = cfg.model_copy(update={"exploration": cfg.exploration.model_copy(update={"epsilon": 0.2})})
    task = load_logs(logs, other, unit="slate", min_overlap=1)
    weights = task.action_dist[:, 0, 0] / task.feedback.pscore
    assert task.zero_target == 0 and 0.5 < weights.mean() < 2 and not np.allclose(weights, 1.0)


def test_a_log_without_the_replay_inputs_is_an_error_not_a_wrong_estimate(
    agent_log: list[dict[str, Any]], tmp_path: Path
) -> None:
    for r in agent_log:  # as exported before the long-tail flags and exposure were logged
        for c in r["candidates"]:
            c.pop("long_tail", None)
            c.pop("exposure", None)
    with pytest.raises(InvalidInput, match="long_tail"):
        load_logs(write(tmp_path / "old.jsonl", agent_log), preset("default"))


def test_mmr_similarities_do_not_depend_on_the_other_columns_of_the_tag_matrix() -> None:
    """The agent's MMR rows span a whole chunk's tags, a replay's one decision's: the same rows
    must give the same bits, or a tie between two candidates breaks differently on replay."""
    rng = np.random.default_rng(0)
    n, used = 60, 40
    compact = np.zeros((n, used))
    for i in range(n):
        tags = rng.choice(used, size=int(rng.integers(1, 12)), replace=False)
        compact[i, tags] = rng.random(tags.size).astype(np.float32)
    wide = np.zeros((n, 300))  # the same tags among others' (all-zero here) columns, order kept
    wide[:, np.sort(rng.choice(300, size=used, replace=False))] = compact
    a = MMRState(unit_length_rows(compact).view(UnitRowsArray))
    b = MMRState(unit_length_rows(wide).view(UnitRowsArray))
    for j in rng.permutation(n)[:20]:
        assert np.array_equal(a.similarity_row(int(j)), b.similarity_row(int(j)))


def test_unit_rows_from_sparse_entries_have_the_bits_of_the_dense_rows() -> None:
    """The agent scales a chunk's rows from the items' sparse entries (agent/context.py), a replay
    scales dense rows (`unit_length_rows`): the same bits either way."""
    rng = np.random.default_rng(1)
    lens = rng.integers(0, 15, size=80)
    cols = np.concatenate([np.sort(rng.choice(120, size=k, replace=False)) for k in lens])
    data = rng.random(cols.size).astype(np.float32).astype(np.float64) * 3
    dense = np.zeros((lens.size, 120))
    dense[np.repeat(np.arange(lens.size), lens), cols] = data
    from_entries = np.zeros_like(dense)
    from_entries[np.repeat(np.arange(lens.size), lens), cols] = unit_length_entries(lens, data)
    assert np.array_equal(from_entries, unit_length_rows(dense))
