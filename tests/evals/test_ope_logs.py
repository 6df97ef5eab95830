"""OPE on tagloop decision logs: synthetic exports from a logging policy with known, exact
propensities, where the candidate policy's true value is computable, so the estimators can be
checked against it; plus the `tagloop eval ope --logs --policy` command end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tagloop.evals.cli import app
from tagloop.evals.ope.evaluate import evaluate
from tagloop.evals.ope.logs import load_logs, target_probability
from tagloop.policies import PolicyConfig, choose_slate, parse_policy
from tagloop.tools.errors import InvalidInput

N_CANDIDATES, K = 8, 3
BASE = {
    "k": K,
    "fairness": {"lambda": 0.0, "long_tail_min_share": 0.0},
    "diversity": {"mmr_lambda": 0.0},
    "guards": {"holdout_share": 0.0},
}
LOGGING = parse_policy({**BASE, "name": "explorer", "exploration": {"epsilon": 0.5}})
GREEDY = parse_policy({**BASE, "name": "greedy", "exploration": {"epsilon": 0.0}})
GREEDY_TOML = """name = "greedy"
k = 3
[exploration]
epsilon = 0.0
[fairness]
lambda = 0.0
long_tail_min_share = 0.0
[diversity]
mmr_lambda = 0.0
[guards]
holdout_share = 0.0
"""


def click_probability(scores: np.ndarray, slate: list[int]) -> float:
    """The true reward model: better items in better slots make opens likelier."""
    w = 1.0 / np.log2(np.arange(len(slate)) + 2.0)
    return float(0.05 + 0.5 * (w * scores[slate]).sum() / w.sum())


def synthetic_log(n: int, seed: int, policy: PolicyConfig = LOGGING) -> tuple[list[dict[str, Any]], float]:
    """Decision records as `tagloop decisions export` writes them, and greedy's true value."""
    rng = np.random.default_rng(seed)
    records, truth = [], 0.0
    for i in range(n):
        scores = rng.random(N_CANDIDATES)
        ids = [f"item-{i}-{j}" for j in range(N_CANDIDATES)]
        providers = [f"prov-{j}" for j in range(N_CANDIDATES)]
        d = choose_slate(policy, scores, providers, None, None, {}, np.zeros(N_CANDIDATES, bool), rng)
        reward = int(rng.random() < click_probability(scores, list(d.actions)))
        truth += click_probability(scores, list(np.argsort(-scores)[:K]))
        records.append(
            {
                "decision_id": f"d{i}",
                "user_id": f"u{i % 50}",
                "ts": "2026-01-05T06:00:00+00:00",
                "policy": policy.name,
                "version": policy.version,
                "seed": i,
                "candidates": [
                    {"item_id": ids[j], "score": float(scores[j]), "source": "tags", "provider": providers[j]}
                    for j in range(N_CANDIDATES)
                ],
                "chosen": [ids[a] for a in d.actions],
                "propensities": list(d.propensities),
                "channel": "push",
                "send_at": "2026-01-05T08:00:00+00:00",
                "context": {
                    "local_hour": int(rng.integers(0, 24)),
                    "weekday": 1 + i % 7,
                    "n_events": int(rng.integers(1, 300)),
                    "outcome": "message",
                },
                "reward": reward,
            }
        )
    return records, truth / n


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_estimators_recover_the_greedy_policys_true_value_from_exploring_logs(tmp_path: Path) -> None:
    records, truth = synthetic_log(4000, seed=1)
    task = load_logs(write_jsonl(tmp_path / "d.jsonl", records), GREEDY)
    result = evaluate(task.feedback, task.action_dist, np.random.default_rng(0), n_boot=60)
    assert truth - task.logged_value > 0.03  # the question is not trivial: greedy is clearly better
    for name in ("ips", "snips", "dr"):
        lo, hi = result.ci95[name]
        assert lo - 0.01 <= truth <= hi + 0.01, (name, result.estimates[name], truth)
        assert abs(result.estimates[name] - truth) < 0.04


def test_the_logging_policy_as_candidate_gets_weight_one_and_the_logged_value(tmp_path: Path) -> None:
    records, _ = synthetic_log(500, seed=2)
    task = load_logs(write_jsonl(tmp_path / "d.jsonl", records), LOGGING)
    w = task.action_dist[:, 0, 0] / task.feedback.pscore
    np.testing.assert_allclose(w, 1.0, rtol=1e-4)
    assert task.zero_target == 0


def test_a_candidate_with_another_slate_size_cannot_show_the_logged_slate(tmp_path: Path) -> None:
    records, _ = synthetic_log(5, seed=3)
    bigger = parse_policy({**BASE, "k": 5, "exploration": {"epsilon": 0.2}})
    assert all(target_probability(bigger, r, "x") == 0.0 for r in records)
    assert all(target_probability(GREEDY, r, "x") in (0.0, 1.0) for r in records)


def test_decisions_without_a_message_are_not_rounds(tmp_path: Path) -> None:
    records, _ = synthetic_log(30, seed=4)
    for r in records[:10]:
        r["context"]["outcome"] = "capped"
    task = load_logs(write_jsonl(tmp_path / "d.jsonl", records), LOGGING)
    assert task.feedback.n_rounds == 20 and task.skipped["no_message"] == 10


def test_eval_ope_logs_command_prints_spec_json(tmp_path: Path) -> None:
    records, _ = synthetic_log(600, seed=5)
    logs = write_jsonl(tmp_path / "decisions.jsonl", records)
    policy = tmp_path / "greedy.toml"
    policy.write_text(GREEDY_TOML, encoding="utf-8")
    out = CliRunner().invoke(
        app,
        [
            "ope",
            "--logs",
            str(logs),
            "--policy",
            str(policy),
            "--n-boot",
            "20",
            "--json",
            "--report",
            str(tmp_path / "report"),
        ],
    )
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert payload["ground_truth"] is None and payload["relative_error"] == {}
    assert (
        set(payload["estimates"]) >= {"ips", "snips", "dm", "dr"}
        and payload["recommended"] in payload["estimates"]
    )
    assert payload["recommendation_reliable"] is True and "recommendation_caveat" not in payload
    assert payload["policy"] == "greedy@1" and payload["n_rounds"] == 600
    assert (tmp_path / "report" / "estimates.png").exists()
    assert "dashed: ground truth" not in (tmp_path / "report" / "index.md").read_text()  # none to draw


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--logs", "missing.jsonl", "--policy", "p.toml"], "policy file not found"),
        (["--logs", "d.jsonl"], "--policy POLICY.toml go together"),
        (["--logs", "nope.jsonl", "--policy", "greedy.toml"], "decision log not found"),
        (["--logs", "bad.jsonl", "--policy", "greedy.toml"], "bad.jsonl:2: not JSON"),
        (["--logs", "stranger.jsonl", "--policy", "greedy.toml"], "not among the candidates"),
        (["--obd", "x", "--logs", "d.jsonl", "--policy", "greedy.toml"], "not both"),
        (["--logs", ".", "--policy", "greedy.toml"], ".: is a directory, expected a decision log"),
        (["--logs", "utf16.jsonl", "--policy", "greedy.toml"], "utf16.jsonl:1: the file is not UTF-8"),
    ],
)
def test_eval_ope_logs_bad_input_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    records, _ = synthetic_log(3, seed=6)
    write_jsonl(tmp_path / "d.jsonl", records)
    (tmp_path / "greedy.toml").write_text(GREEDY_TOML, encoding="utf-8")
    (tmp_path / "bad.jsonl").write_text(json.dumps(records[0]) + "\n{oops\n", encoding="utf-8")
    (tmp_path / "utf16.jsonl").write_text(json.dumps(records[0]) + "\n", encoding="utf-16")
    records[0]["chosen"][0] = "someone-else"
    write_jsonl(tmp_path / "stranger.jsonl", records)
    out = CliRunner().invoke(app, ["ope", *args, "--json"])
    assert out.exit_code == 2
    assert message in out.output
    assert "Traceback" not in out.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reward": "abc"}, "'reward' must hold finite numbers, got 'abc'"),
        ({"reward": float("nan")}, "'reward' must hold finite numbers, got nan"),
        ({"propensities": ["x", 0.5, 0.5]}, "'propensities' must hold finite numbers, got 'x'"),
        ({"propensities": [2.0, 0.1, 0.1]}, "each of 'propensities' must be in (0, 1], got 2"),
        ({"context": [1, 2]}, "malformed decision record (AttributeError"),
        ({"context": {"local_hour": "noon"}}, "malformed decision record (ValueError"),
    ],
)
def test_a_field_of_the_wrong_type_names_its_line(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    """Each of these was a Python traceback (or NaN estimates printed as non-JSON, exit 0)."""
    records, _ = synthetic_log(40, seed=8)
    records[1] = {**records[1], **change}
    path = write_jsonl(tmp_path / "d.jsonl", records)
    with pytest.raises(InvalidInput) as err:
        load_logs(path, GREEDY)
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value), str(err.value)


def test_top_slot_unit_uses_the_first_propensity_and_pads_to_the_policys_k(tmp_path: Path) -> None:
    records, _ = synthetic_log(300, seed=7)
    bigger = parse_policy({**BASE, "k": 5, "exploration": {"epsilon": 0.2}})
    task = load_logs(write_jsonl(tmp_path / "d.jsonl", records), bigger, unit="top")
    np.testing.assert_allclose(task.feedback.pscore, [r["propensities"][0] for r in records])
    assert task.zero_target == 0  # ε > 0: every logged top item is possible in slot 0
    with pytest.raises(InvalidInput, match="too little overlap"):
        load_logs(write_jsonl(tmp_path / "d.jsonl", records), bigger, unit="slate")


RANDOM_TOML = GREEDY_TOML.replace('"greedy"', '"random"').replace("epsilon = 0.0", "epsilon = 1.0")


def test_collapsed_weights_name_dm_as_a_fallback_with_a_caveat(tmp_path: Path) -> None:
    """Logs of a nearly greedy policy, candidate uniform random: its probability of every logged
    slate is small but positive, and a few exploring rounds carry almost all the weight (ESS ≈ 3 of
    600). IPS was recommended there: ~0 with a tight interval, as its bootstrap saw weights ~0."""
    nearly_greedy = parse_policy({**BASE, "name": "nearly-greedy", "exploration": {"epsilon": 0.05}})
    records, _ = synthetic_log(600, seed=1, policy=nearly_greedy)
    logs = write_jsonl(tmp_path / "decisions.jsonl", records)
    policy = tmp_path / "random.toml"
    policy.write_text(RANDOM_TOML, encoding="utf-8")
    report = tmp_path / "report"
    args = ["--logs", str(logs), "--policy", str(policy), "--n-boot", "20", "--report", str(report)]
    out = CliRunner().invoke(app, ["ope", *args, "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    ess = payload["diagnostics"]["effective_sample_size"]
    assert payload["diagnostics"]["max_weight"] > 0 and ess < 30
    assert payload["recommended"] == "dm" and not payload["recommendation_reliable"]  # SPEC §6: a NAME
    assert "effective sample size" in payload["recommendation_caveat"]
    assert "only a fallback" in out.stderr and "--unit top" in out.stderr
    page = (report / "index.md").read_text()
    assert "(dm) is only a fallback" in page and "dm (recommended)" in page


def test_logs_without_any_reward_name_dm_as_a_fallback(tmp_path: Path) -> None:
    """Logs of a fresh deployment (no open or click yet): every estimate is 0 with a [0, 0] interval,
    and IPS used to be recommended from them without a word."""
    records, _ = synthetic_log(300, seed=9)
    logs = write_jsonl(tmp_path / "decisions.jsonl", [{**r, "reward": 0} for r in records])
    policy = tmp_path / "greedy.toml"
    policy.write_text(GREEDY_TOML, encoding="utf-8")
    out = CliRunner().invoke(
        app, ["ope", "--logs", str(logs), "--policy", str(policy), "--n-boot", "20", "--json"]
    )
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert payload["recommended"] == "dm" and payload["diagnostics"]["n_positive_rewards"] == 0
    assert payload["recommendation_caveat"].startswith("every one of the 300 logged rewards is 0")
    assert payload["recommendation_reliable"] is False
    assert "only a fallback" in out.stderr and "--unit top" not in out.stderr
