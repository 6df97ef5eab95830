"""What of a user may appear in logs: a keyed pseudonym of their id (HMAC-SHA256 under the
deployment's log key, 12 hex digits). One user's lines can still be followed, but a list of
candidate ids or e-mail addresses cannot be matched against the logs without the key, as it could
with a plain hash.

The key: `TAGLOOP_LOG_KEY` when set (give every host of a deployment the same one), else a random
key kept in `$TAGLOOP_HOME/log.key` (mode 0600, made on first use), shared by the processes of one
home. `use_key_of` sets it from the entrypoints (HTTP app, worker); before that, or when the home
cannot hold the file, a process has a random key of its own (its pseudonyms match no other's).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("tagloop.logsafe")
KEY_FILE = "log.key"
_key: list[bytes] = []  # the process's key, once chosen


def hashed(user_id: str) -> str:
    """A user id as it may appear in logs."""
    if not _key:
        _key.append(secrets.token_bytes(32))
    return hmac.new(_key[0], user_id.encode(), hashlib.sha256).hexdigest()[:12]


def use_key_of(configured: str | None, home: Path) -> None:
    """Key the pseudonyms with `configured` (TAGLOOP_LOG_KEY), else with the home's key file."""
    key = configured.encode() if configured else _home_key(home)
    _key[:] = [key or secrets.token_bytes(32)]


def _home_key(home: Path) -> bytes | None:
    path = home / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("event=log_key_unreadable path=%s error=%s: a key for this process only", path, exc)
        return None
    key = secrets.token_bytes(32)
    draft = home / f"{KEY_FILE}.{os.getpid()}"
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex() + "\n")
        os.link(draft, path)  # whole or not at all, and never over another process's key
    except FileExistsError:  # another process made it meanwhile: use theirs
        return _home_key(home)
    except OSError as exc:
        log.warning("event=log_key_unwritable path=%s error=%s: a key for this process only", path, exc)
        return None
    finally:
        draft.unlink(missing_ok=True)
    return key
