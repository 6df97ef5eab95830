"""Settings from the environment and the TOML file named by TAGLOOP_CONFIG (SPEC §7): the
environment wins, a structured value included; a list reads alike from either."""

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


def test_list_entries_are_stripped_in_a_file_as_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the comma-separated form was stripped: `" key-two"` from the file made its bearer a 401."""
    config = tmp_path / "tagloop.toml"
    config.write_text('api_keys = ["key-one", " key-two", ""]\ncustom_event_types = [" rate ", " "]\n')
    monkeypatch.setenv("TAGLOOP_CONFIG", str(config))
    for name in ("TAGLOOP_API_KEYS", "TAGLOOP_CUSTOM_EVENT_TYPES"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert [key.get_secret_value() for key in settings.api_keys] == ["key-one", "key-two"]
    assert settings.custom_event_types == ["rate"]
    monkeypatch.setenv("TAGLOOP_API_KEYS", "key-one, key-two,,")
    assert [key.get_secret_value() for key in load_settings().api_keys] == ["key-one", "key-two"]


def test_none_in_the_environment_unsets_what_the_file_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty variable is ignored, so the environment could not turn off email or go back to the
    embedded database for one process while the shared file set them."""
    config = tmp_path / "tagloop.toml"
    config.write_text('smtp_url = "smtp://mail.example.com:25"\ndatabase_url = "postgresql://db.example/t"\n')
    monkeypatch.setenv("TAGLOOP_CONFIG", str(config))
    for name in ("TAGLOOP_SMTP_URL", "TAGLOOP_DATABASE_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert load_settings().smtp_url == "smtp://mail.example.com:25"
    monkeypatch.setenv("TAGLOOP_SMTP_URL", "")  # ignored, as documented
    assert load_settings().smtp_url == "smtp://mail.example.com:25"
    monkeypatch.setenv("TAGLOOP_SMTP_URL", "None")
    monkeypatch.setenv("TAGLOOP_DATABASE_URL", "none")
    settings = load_settings()
    assert (settings.smtp_url, settings.database_url) == (None, None)


def test_an_empty_or_relative_xdg_data_home_means_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XDG_DATA_HOME= (set, empty) made the home the relative path `tagloop`: a new embedded
    database in every directory a command ran from."""
    for name in ("TAGLOOP_HOME", "TAGLOOP_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for value in ("", "relative/dir"):
        monkeypatch.setenv("XDG_DATA_HOME", value)
        assert load_settings().home == tmp_path / ".local" / "share" / "tagloop"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_settings().home == tmp_path / "xdg" / "tagloop"
