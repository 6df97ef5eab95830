"""Progress of the long eval commands on stderr: a rich spinner on a terminal, plain stage lines
otherwise (a log file or a pipe gets them one per line; the spinner would print nothing there).

    with stages(err, "recsys eval") as say:
        say("training on 1871 users × 18022 items")   # spinner text, or "recsys eval: training …"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console


@contextmanager
def stages(err: Console, label: str) -> Iterator[Callable[[str], None]]:
    """A `say(message)` for the duration of the block (see the module docstring)."""
    if err.is_terminal:
        with err.status(label) as status:
            yield lambda msg: status.update(f"{label}: {msg}")
    else:
        yield lambda msg: err.print(f"{label}: {msg}", soft_wrap=True, highlight=False)
