"""A run against a slow LLM (local fake OpenAI-compatible server, no mocks) on the real database:
the LLM is asked twice, then the rest of the run's messages use templates at once, and every
decision records why its copy fell back."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from agent_support import load_demo

from tagloop.agent.runner import run_users
from tagloop.agent.settings import Settings
from tagloop.tools.messaging.channels import FileChannel
from tests.fake_openai import fake_openai

NOW = datetime(2026, 5, 4, 9, tzinfo=UTC)
GOOD = json.dumps({"title": "Fresh picks", "body": "Try these tonight."})


def test_a_slow_llm_costs_a_run_two_timeouts_not_one_per_user(
    db: psycopg.Connection[Any], tmp_path: Path
) -> None:
    users = load_demo(db, tmp_path / "demo", NOW, users=12)
    with fake_openai(lambda mode, body: GOOD, slow_seconds=3.0) as fake:
        settings = Settings(
            home=tmp_path / "home",
            llm_base_url=fake.base_url("slow"),
            llm_model="fake-model",
            llm_timeout_seconds=0.4,
            llm_max_retries=0,
        )
        start = time.perf_counter()
        outcomes = run_users(
            db,
            settings,
            users,
            now=NOW,
            run_key="slow-llm",
            channels={"file": FileChannel(tmp_path / "o.jsonl")},
        )
        took = time.perf_counter() - start
        asked = fake.requests("slow")
        facts = [json.loads(s["body"]["messages"][-1]["content"])["data"] for s in fake.seen]
    # the picks' kind goes with the facts (the prompt said "music or content" whatever was sold)
    assert facts and all(f["kind"] == "track" for f in facts), facts
    messages = [o for o in outcomes if o.outcome == "message"]
    assert len(messages) >= 4
    assert asked == 2
    assert took < 2 * 0.4 + 5.0  # two timeouts, not one per user (12 × 0.4 s)
    copies = [
        r["context"]["copy"] for r in db.execute("select context from decisions where outcome = 'message'")
    ]
    assert sorted(c["fallback"] for c in copies) == sorted(
        ["llm: timeout"] * 2 + ["llm: circuit open"] * (len(copies) - 2)
    )
    assert {c["template"] for c in copies} == {"discovery-v1"}


def test_runs_of_one_process_share_one_llm_client(db: psycopg.Connection[Any], tmp_path: Path) -> None:
    """A client per run context (each worker batch, each run over HTTP) opened new connections, a TLS
    handshake a batch, and kept its sockets until the cycle collector ran: fds swung 11-64."""
    from tagloop.agent.runner import llm_of, make_context

    settings = Settings(home=tmp_path / "home", llm_base_url="http://127.0.0.1:9/v1", llm_model="m")
    first = make_context(db, settings, now=NOW, run_key="a", channels={})
    again = make_context(db, settings.model_copy(), now=NOW, run_key="b", channels={})
    assert first.llm is not None and first.llm is again.llm is llm_of(settings)
    other = settings.model_copy(update={"llm_model": "other"})
    assert llm_of(other) is not first.llm  # other settings, another client
    assert llm_of(settings.model_copy(update={"llm_base_url": None})) is None
