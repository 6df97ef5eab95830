"""Delivery channels behind one `Channel` protocol. A channel sends one outbound message or raises
`DeliveryError` saying whether a retry can help. Here: `console` (a text stream) and `file`
(appends one JSON line per message — a local inbox that other tools can tail).

Also the checks of the user-given channel addresses (`email_address`), shared
by the record validation (imports, HTTP API) and the channels themselves (defence in depth)."""

from __future__ import annotations

import json
import os
import sys
import threading
import unicodedata
from dataclasses import asdict, dataclass, field
from email.errors import MessageError
from email.headerregistry import Address
from email.utils import getaddresses
from pathlib import Path
from typing import Any, Protocol, TextIO

from tagloop.tools.errors import TagloopError


class DeliveryError(TagloopError):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit minus the angle brackets
_HOST_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


# format characters words need: zero-width (non-)joiners (emoji sequences, Persian, Indic) and
# the left-to-right / right-to-left marks; the other format characters (soft hyphen, zero-width
# space, bidi overrides and isolates, BOM, tag characters) are dropped
_KEEP_FORMAT = frozenset("\u200c\u200d\u200e\u200f")


def flat(text: object) -> str:
    """`text` on one line: separators and control characters (newlines, tab, NEL, U+2028, …)
    become spaces, format characters are dropped (but for `_KEEP_FORMAT`), runs of whitespace
    become one space (for mail headers and message copy)."""
    value = str(text)
    if not value.isprintable():  # printable: no category C or Z but the space (no loop)
        value = "".join(map(_flat_char, value))
    return " ".join(value.split())


def _flat_char(ch: str) -> str:
    category = unicodedata.category(ch)
    if category[0] == "Z" or category == "Cc":
        return " "
    if category in ("Cf", "Cs"):
        return ch if ch in _KEEP_FORMAT else ""
    return ch  # private use and not yet assigned characters (newer emoji) stay


def email_address(text: str) -> Address:
    """`text` as exactly one plain address `local@domain`, its domain in ASCII (IDNA) form.

    Raises ValueError saying why not: a control character (CR/LF header injection, tab, U+2028, …),
    more than one address (a comma or semicolon list, `a@x <b@y>`), a display name or comment
    (`Name <a@x>`, `(c) a@x`), a space, or what `email.headerregistry.Address` refuses as an addr-spec;
    then a domain that is not a host name (no address literals)."""
    if not text:
        raise ValueError("is empty")
    if len(text) > MAX_EMAIL_LENGTH:
        raise ValueError(f"is longer than {MAX_EMAIL_LENGTH} characters")
    if not text.isprintable():
        raise ValueError("contains a line break or another control character")
    pairs = getaddresses([text])
    if len(pairs) != 1:
        raise ValueError("must be exactly one address, not a list")
    name, addr = pairs[0]
    if name or addr != text:
        raise ValueError("must be a plain address local@domain, without a display name or comment")
    if " " in text:
        raise ValueError("contains a space")
    try:
        parsed = Address(addr_spec=text)
    except (ValueError, IndexError, MessageError) as exc:
        raise ValueError(f"is not a valid address ({exc})") from None
    local, domain = parsed.username, parsed.domain
    if not local or not domain:
        raise ValueError("must have the form local@domain")
    if len(local) > 64:
        raise ValueError("has a local part longer than 64 characters")
    if domain.startswith("["):
        raise ValueError("must name a domain, not an address literal")
    try:
        ascii_domain = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError(f"has an invalid domain {domain!r}") from None
    labels = ascii_domain.split(".")
    if any(
        not 0 < len(label) <= 63 or label[0] == "-" or label[-1] == "-" or set(label) - _HOST_LABEL_CHARS
        for label in labels
    ):
        raise ValueError(f"has an invalid domain {domain!r}")
    return Address(username=local, domain=ascii_domain)


@dataclass(frozen=True)
class OutboundMessage:
    """SPEC §5 payload."""

    message_id: str
    decision_id: str
    user_id: str
    channel: str
    title: str
    body: str
    items: list[dict[str, str]] = field(default_factory=list)
    send_at: str = ""
    address: str | None = None

    def payload(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("address")
        return data


class Channel(Protocol):
    name: str

    def send(self, message: OutboundMessage) -> None: ...


class ConsoleChannel:
    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def send(self, message: OutboundMessage) -> None:
        self.stream.write(f"[{message.channel} → {message.user_id}] {message.title}\n    {message.body}\n")
        self.stream.flush()


class FileChannel:
    name = "file"
    _lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, message: OutboundMessage) -> None:
        try:
            # messages are personal data: a file and folders this creates are the owner's alone
            # (the umask gave 0644); an existing file keeps the mode its owner gave it
            for folder in reversed([p for p in self.path.parents if not p.exists()]):
                folder.mkdir(mode=0o700, exist_ok=True)
            line = json.dumps(message.payload(), ensure_ascii=False) + "\n"
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as fh:
                    fh.write(line)
        except OSError as exc:
            raise DeliveryError(f"cannot write {self.path}: {exc.strerror}", retryable=True) from exc
