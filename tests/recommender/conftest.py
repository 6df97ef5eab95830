"""The small trained world the Postgres recommender tests share (data in test_pg.load_world)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from test_pg import PARAMS, load_world

from tagloop.tools.recommender import serving
from tagloop.tools.recommender.train import train


@pytest.fixture
def trained(db: psycopg.Connection[Any]) -> serving.Served:
    load_world(db)
    train(db, params=PARAMS, seed=0)
    db.commit()
    served = serving.active(db)
    assert served is not None
    return served
