"""`gc_paused()`: the cyclic garbage collector off while a bulk step runs, shared by every thread.

Decision batches, profile folds and file imports each allocate tens of thousands of mostly acyclic
records; a collection meanwhile finds nothing but walks every live object (a run cache, a server's
startup heap), which was up to half of their time. The pause is counted, so concurrent users (the
scheduler and the profile folder in one `tagloop serve`) switch the collector back on only when the
last of them ends, and it is left alone when someone else had turned it off."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0


@contextmanager
def gc_paused() -> Iterator[None]:
    global _holders
    with _lock:
        managed = _holders > 0 or gc.isenabled()
        if managed:
            _holders += 1
            gc.disable()
    try:
        yield
    finally:
        if managed:
            with _lock:
                _holders -= 1
                if _holders == 0:
                    gc.enable()
