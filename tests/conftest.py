"""Shared fixtures: where the real data sets are, skipping with a reason when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not present at {path} (CI has ../shared/data; a fresh clone does not)")
    return path


@pytest.fixture(scope="session")
def lastfm_dir() -> Path:
    """../shared/data/lastfm-2k (HetRec 2011 Last.fm)."""
    return _need(SHARED / "lastfm-2k")


@pytest.fixture(scope="session")
def lastfm_split() -> Path:
    """../shared/data/lastfm-2k/split: train.csv, test.csv, item_tags.csv."""
    return _need(SHARED / "lastfm-2k" / "split")


@pytest.fixture(scope="session")
def obd_dir() -> Path:
    """../shared/data/obd: Open Bandit Dataset sample, {random,bts}/all/all.csv."""
    return _need(SHARED / "obd")
