"""The `file` channel's JSON lines hold personal data (user ids, titles, bodies): what it creates is
the owner's alone."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from msg_support import MESSAGE

from tagloop.tools.messaging.channels import FileChannel


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_file_and_folders_it_creates_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "outbox" / "2026" / "messages.jsonl"
    old = os.umask(0o022)  # the usual umask made the file 0644 and its folder 0755
    try:
        FileChannel(path).send(MESSAGE)
        FileChannel(path).send(MESSAGE)
    finally:
        os.umask(old)
    assert _mode(path) == 0o600 and _mode(path.parent) == _mode(path.parent.parent) == 0o700
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 2 and lines[0] == MESSAGE.payload()


def test_an_existing_file_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    path.write_text("", encoding="utf-8")
    path.chmod(0o640)
    FileChannel(path).send(MESSAGE)
    assert _mode(path) == 0o640 and path.read_text(encoding="utf-8").count("\n") == 1
