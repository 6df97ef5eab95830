"""The PNG (or other matplotlib format) figures of `tagloop patterns trends|timing --plot`: daily
positive events of the top trends with their phase, and each tag's hour-of-week lift heat map."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tagloop.agent.cli_common import save_plot

if TYPE_CHECKING:
    from tagloop.tools.patterns_timing import TagTiming


def plot_trends(rows: list[dict[str, Any]], now: datetime, days: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = np.arange(-(days - 1), 1)  # days before --now
    for r in rows[:8]:
        ax.plot(x, r["daily"], label=f"{r['title'] or r['key']} ({r['phase']})")
    ax.set_xlabel(f"days before {now:%Y-%m-%d}")
    ax.set_ylabel("positive events per day")
    ax.set_title("Trends and their phase")
    if rows:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_plot(fig, path)


def plot_timing(tags: list[TagTiming], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tagloop.tools.patterns_timing import DAYS

    n = max(len(tags), 1)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.8 * n + 0.6), squeeze=False)
    for ax, t in zip(axes[:, 0], tags, strict=False):
        grid = np.log2(np.asarray(t.lift).reshape(7, 24))
        image = ax.imshow(grid, cmap="RdBu_r", vmin=-1.5, vmax=1.5, aspect="auto")
        ax.set_yticks(range(7), DAYS, fontsize=7)
        ax.set_xticks(range(0, 24, 3), [f"{h:02d}" for h in range(0, 24, 3)], fontsize=7)
        ax.set_title(f"{t.tag}: weekend lift {t.weekend_lift:.2f}", fontsize=9)
        fig.colorbar(image, ax=ax, label="log2 lift", fraction=0.03)
    fig.tight_layout()
    return save_plot(fig, path)
