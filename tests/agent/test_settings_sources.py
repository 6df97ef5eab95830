"""Settings from the environment and the TOML file named by TAGLOOP_CONFIG (SPEC §7): the
environment wins, a structured value included."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagloop.agent.settings import load_settings


def test_an_environment_dict_replaces_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "tagloop.toml"
    config.write_text('[cadences]\nweekly_discovery = "7d"\nhourly = "1h"\n')
    monkeypatch.setenv("TAGLOOP_CONFIG", str(config))
    monkeypatch.delenv("TAGLOOP_CADENCES", raising=False)
    assert load_settings().cadences == {"weekly_discovery": "7d", "hourly": "1h"}
    monkeypatch.setenv("TAGLOOP_CADENCES", '{"weekly_discovery": "1d"}')  # was merged: hourly stayed
    assert load_settings().cadences == {"weekly_discovery": "1d"}
    monkeypatch.setenv("TAGLOOP_CADENCES", "{}")  # was the file's two
    assert load_settings().cadences == {}
    assert load_settings(cadences={"daily": "1d"}).cadences == {"daily": "1d"}
