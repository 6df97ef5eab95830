"""`tagloop train` / `tagloop recommend` end to end, the HTTP recommendations served by the trained
model (tag retrieval before training, same response shape), and the agent using the CF source."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from test_pg import GENRES, load_world
from typer.testing import CliRunner

from tagloop.agent import cli
from tagloop.agent.http import create_app
from tagloop.agent.runner import decide, make_context
from tagloop.agent.settings import Settings
from tagloop.tools.candidates import sources_named
from tagloop.tools.recommender import MAX_K, serving

KEY = "test-key-6"


def _run(*args: str) -> dict[str, Any]:
    cli._mount_evals()
    result = CliRunner().invoke(cli.app, list(args))
    assert result.exit_code == 0, result.output
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def test_train_then_recommend_from_the_command_line(db: psycopg.Connection[Any], tagloop_env: Path) -> None:
    load_world(db)
    trained = _run("train", "--json")
    assert trained["items"] == 30 and trained["users"] == 60 and trained["dim"] > 1
    assert set(trained["seconds"]) >= {"read", "fit", "store_items", "index", "user_vectors"}
    assert (tagloop_env / "models" / str(trained["model_id"]) / "model.npz").exists()
    recs = _run("recommend", "--user", "u2", "--k", "4", "--json")
    assert len(recs["items"]) == 4 and recs["items"][0]["item_id"].startswith(GENRES[2])
    assert all(r["explanation"] for r in recs["items"])


def test_recommend_before_training_and_for_unknown_users_is_a_plain_error(
    db: psycopg.Connection[Any], tagloop_env: Path
) -> None:
    load_world(db)
    cli._mount_evals()
    no_model = CliRunner().invoke(cli.app, ["recommend", "--user", "u1"])
    assert no_model.exit_code != 0 and "tagloop train" in str(no_model.exception)
    unknown = CliRunner().invoke(cli.app, ["recommend", "--user", "ghost"])
    assert unknown.exit_code != 0 and "ghost" in str(unknown.exception)


def test_http_recommendations_switch_to_the_model_once_trained(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    load_world(db)
    settings = Settings(database_url=db_url, home=tmp_path, api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    with TestClient(create_app(settings, pool_size=2)) as client:
        before = client.get("/v1/users/u1/recommendations", params={"k": 5}, headers=auth).json()
        _run_train(db)
        after = client.get("/v1/users/u1/recommendations", params={"k": 5}, headers=auth).json()
    assert set(before) == set(after) == {"user_id", "items"}
    fields = {"item_id", "title", "provider", "score", "explanation", "cold"}  # as `tagloop recommend`
    # before training: tag retrieval over the profile that reading folds in (read-your-writes);
    # after: the trained model, whose inner-product scores differ from tag-profile scores
    assert all(set(i) == fields for i in before["items"]) and len(after["items"]) == 5
    assert [i["score"] for i in before["items"]] != [i["score"] for i in after["items"]]
    assert all(set(i) == fields for i in after["items"])
    assert all(i["item_id"].startswith(GENRES[1]) for i in after["items"][:3])
    assert all(i["explanation"] for i in after["items"])
    assert not any(i["cold"] for i in before["items"] + after["items"])  # every item was trained on


def test_http_and_cli_recommendations_share_one_k_limit(
    db: psycopg.Connection[Any], db_url: str, tagloop_env: Path
) -> None:
    load_world(db)
    _run_train(db)
    settings = Settings(database_url=db_url, home=tagloop_env, api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    with TestClient(create_app(settings, pool_size=2)) as client:
        top = client.get("/v1/users/u1/recommendations", params={"k": MAX_K}, headers=auth)
        over = client.get("/v1/users/u1/recommendations", params={"k": MAX_K + 1}, headers=auth)
    assert top.status_code == 200 and len(top.json()["items"]) == 30 - 5  # the catalogue, u1's unseen
    assert over.status_code == 422 and str(MAX_K) in over.text
    assert _run("recommend", "--user", "u1", "--k", str(MAX_K), "--json")["items"]
    too_many = CliRunner().invoke(cli.app, ["recommend", "--user", "u1", "--k", str(MAX_K + 1)])
    assert too_many.exit_code != 0


def _run_train(db: psycopg.Connection[Any]) -> None:
    from tagloop.tools.recommender.train import train

    train(db, seed=0)
    db.commit()


def test_the_agent_gets_cf_candidates(db: psycopg.Connection[Any], db_url: str, tmp_path: Path) -> None:
    load_world(db)
    _run_train(db)
    settings = Settings(database_url=db_url, home=tmp_path, candidate_sources=["cf"])
    assert [s.name for s in sources_named(settings.candidate_sources)] == ["cf"]
    ctx = make_context(db, settings, now=datetime.now(UTC), run_key="t6")
    plans = decide(ctx, ["u0", "u3"], trigger="manual")
    assert plans["u0"].candidates and all(c.source == "cf" for c in plans["u0"].candidates)
    assert plans["u0"].candidates[0].item_id.startswith(GENRES[0])
    assert serving.active(db) is not None


def test_http_recommendations_store_a_stale_users_vector(
    db: psycopg.Connection[Any], db_url: str, tmp_path: Path
) -> None:
    load_world(db)
    _run_train(db)
    db.execute("delete from rec_user_vectors where user_id = 'u2'")
    db.commit()
    settings = Settings(database_url=db_url, home=tmp_path, api_keys=[KEY])
    auth = {"Authorization": f"Bearer {KEY}"}
    with TestClient(create_app(settings, pool_size=2)) as client:
        first = client.get("/v1/users/u2/recommendations", params={"k": 5}, headers=auth).json()
        row = db.execute("select model_id from rec_user_vectors where user_id = 'u2'").fetchone()
        db.commit()
        again = client.get("/v1/users/u2/recommendations", params={"k": 5}, headers=auth).json()
    assert row is not None  # the request folded the user in and kept the vector for the next one
    assert first == again and len(first["items"]) == 5
    assert all(i["explanation"] for i in first["items"])
