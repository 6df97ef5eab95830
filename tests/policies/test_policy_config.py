"""POLICY.toml validation: presets load, bad files fail with file + field in the message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagloop.policies.config import PolicyConfig, load_policy, preset
from tagloop.tools.errors import InvalidInput


def test_default_preset_equals_model_defaults() -> None:
    assert preset("default") == PolicyConfig()


def test_baseline_presets_turn_the_knobs_they_claim() -> None:
    random, greedy = preset("random"), preset("greedy")
    assert random.exploration.epsilon == 1.0 and random.bandits.strategy == "uniform"
    assert greedy.exploration.epsilon == 0.0 and greedy.exploration.temperature == 0.0
    for cfg in (random, greedy):
        assert cfg.fairness.lambda_ == 0.0 and cfg.fairness.long_tail_min_share == 0.0
        assert cfg.diversity.mmr_lambda == 0.0 and cfg.diversity.calibration_lambda == 0.0
    assert greedy.bandits.strategy == "greedy"


def test_unknown_preset_is_named() -> None:
    with pytest.raises(InvalidInput, match="unknown policy preset 'smart'"):
        preset("smart")


def test_a_valid_file_loads_with_lambda_and_caps(tmp_path: Path) -> None:
    path = tmp_path / "POLICY.toml"
    path.write_text(
        'name = "fair"\nversion = "3"\nk = 5\n[fairness]\nlambda = 0.7\n'
        '[guards]\nquiet_start = "22:30"\n[guards.caps.sms]\nper_day = 1\n'
    )
    cfg = load_policy(path)
    assert (cfg.name, cfg.version, cfg.k) == ("fair", "3", 5)
    assert cfg.fairness.lambda_ == 0.7
    assert cfg.guards.quiet_start.hour == 22 and cfg.guards.quiet_start.minute == 30
    assert cfg.guards.caps["sms"].per_day == 1 and cfg.guards.caps["sms"].per_week is None
    # a file's caps change the channels it names; the others keep their defaults
    assert cfg.guards.caps["email"] == PolicyConfig().guards.caps["email"]
    assert cfg.guards.caps["push"].per_day == 2


def test_an_empty_cap_table_removes_that_channels_limits(tmp_path: Path) -> None:
    path = tmp_path / "POLICY.toml"
    path.write_text("[guards.caps.push]\n[guards.caps.email]\nper_week = 5\n")
    caps = load_policy(path).guards.caps
    assert caps["push"].per_day is None and caps["push"].per_week is None
    assert caps["email"].per_week == 5 and caps["email"].per_day is None
    assert caps["webhook"] == PolicyConfig().guards.caps["webhook"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("[exploration]\nepsilon = 1.5\n", "exploration.epsilon"),
        ("[exploration]\nepsilom = 0.1\n", "exploration.epsilom: unknown field"),
        ("[exploration]\npool = 'everything'\n", "exploration.pool"),
        ("[guards]\nquiet_start = '25:00'\n", "guards.quiet_start: expected a local time"),
        ("[guards]\nquiet_end = '08:00+02:00'\n", "guards.quiet_end: quiet hours are local wall times"),
        ("[diversity]\nmmr_lambda = 0.6\ncalibration_lambda = 0.6\n", "mmr_lambda + calibration_lambda"),
        ("[bandits]\nsend_hours = [8, 24]\n", "bandits.send_hours: send hours must be 0..23"),
        (
            "[bandits]\nprior_alpha = 0.05\n",
            "bandits.prior_alpha: Input should be greater than or equal to 0.1",
        ),
        ("[guards.caps.push]\nper_day = -1\n", "guards.caps.push.per_day"),
        ("[guards.caps.emial]\nper_day = 1\n", "guards.caps.emial: no such channel; did you mean 'email'?"),
        ("k = 0\n", "k:"),
        ("colour = 'red'\n", "colour: unknown field"),
    ],
)
def test_bad_policy_file_names_file_and_field(tmp_path: Path, body: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(InvalidInput) as err:
        load_policy(path)
    assert str(path) in str(err.value)
    assert fragment in str(err.value)


def test_missing_and_malformed_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="policy file not found"):
        load_policy(tmp_path / "nope.toml")
    bad = tmp_path / "broken.toml"
    bad.write_text("k = = 3\n")
    with pytest.raises(InvalidInput, match="not valid TOML"):
        load_policy(bad)
