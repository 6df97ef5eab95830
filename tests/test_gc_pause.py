"""The shared collector pause: nested and concurrent users switch it back on only when the last
one ends, and a collector someone else turned off stays off."""

from __future__ import annotations

import gc
import threading

from tagloop.tools.gc_pause import gc_paused


def test_the_collector_returns_when_the_last_user_ends() -> None:
    assert gc.isenabled()
    other_in, main_in = threading.Event(), threading.Event()

    def other() -> None:  # pauses first, ends first
        with gc_paused():
            other_in.set()
            main_in.wait(5)

    thread = threading.Thread(target=other)
    thread.start()
    other_in.wait(5)
    with gc_paused():
        main_in.set()
        thread.join(5)
        assert not gc.isenabled()  # the other thread's end must not switch it back on under us
    assert gc.isenabled()


def test_a_collector_turned_off_elsewhere_stays_off() -> None:
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
