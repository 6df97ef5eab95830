"""Delivery channels behind one `Channel` protocol. A channel sends one outbound message or raises
`DeliveryError` saying whether a retry can help. Here: `console` (a text stream) and `file`
(appends one JSON line per message — a local inbox that other tools can tail)."""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from tagloop.tools.errors import TagloopError


class DeliveryError(TagloopError):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps(message.payload(), ensure_ascii=False) + "\n"
            with self._lock, self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            raise DeliveryError(f"cannot write {self.path}: {exc.strerror}", retryable=True) from exc
