"""User pseudonyms in logs are keyed: the same user reads the same within a deployment (one home's
key file, or TAGLOOP_LOG_KEY), but a plain hash of a known id or address does not find them."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from tagloop.tools import logsafe

USER = "dave@example.org"


def _in_fresh_process(home: Path, configured: str | None = None) -> str:
    code = (
        "import sys; from pathlib import Path; from tagloop.tools import logsafe; "
        "logsafe.use_key_of(sys.argv[2] or None, Path(sys.argv[1])); print(logsafe.hashed(sys.argv[3]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(home), configured or "", USER],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_processes_of_one_home_agree_and_a_plain_hash_does_not_match(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first, second = _in_fresh_process(home), _in_fresh_process(home)
    assert first == second and len(first) == 12
    assert first != hashlib.sha256(USER.encode()).hexdigest()[:12]
    key_file = home / logsafe.KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(bytes.fromhex(key_file.read_text())) == 32
    assert _in_fresh_process(tmp_path / "other") != first  # another deployment's key


def test_a_configured_key_is_the_same_on_every_host(tmp_path: Path) -> None:
    one = _in_fresh_process(tmp_path / "a", "shared-log-key")
    assert one == _in_fresh_process(tmp_path / "b", "shared-log-key")
    assert one != _in_fresh_process(tmp_path / "a")  # the home's own key is another


def test_an_unwritable_home_still_gets_a_key_of_its_own(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    logsafe.use_key_of(None, blocked / "home")  # cannot make the home: a process key, a warning
    assert logsafe.hashed(USER) != hashlib.sha256(USER.encode()).hexdigest()[:12]
    assert logsafe.hashed(USER) == logsafe.hashed(USER)


def test_service_log_lines_are_utc_and_one_event_a_line() -> None:
    """A worker started with TZ=Asia/Tokyo wrote local times with no offset, and a traceback (or an
    embedded server's pg_ctl output) spread one event over several lines."""
    import logging
    import re
    import sys

    from tagloop.agent.cli import OneLineFormatter

    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        record = logging.LogRecord(
            "tagloop.x", logging.ERROR, __file__, 1, "failed:\n%s", ("two",), sys.exc_info()
        )
    record.created, record.msecs = 1_765_157_454.974, 974.0  # 2025-12-08T01:30:54.974Z
    line = OneLineFormatter().format(record)
    assert "\n" not in line and "\r" not in line
    assert re.match(r"2025-12-08T01:30:54\.974Z ERROR tagloop\.x failed:\\ntwo\\nTraceback", line), line
    assert "ValueError: bad\\nvalue" in line
