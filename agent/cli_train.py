"""`tagloop train` and `tagloop recommend`: fit the recommender on the store and serve it from Postgres.

- `train [--seed S] [--json]`: tools/recommender/train.py on every stored event; prints the model
  id, sizes and per-step timings (progress on stderr); the new model is served at once.
- `recommend --user ID [--k 20] [--json]`: the user's top-k unseen items from the active model
  (one pgvector HNSW statement from the user's stored vector, `rec_user_vectors`, refolded first
  when the user has newer events), each with its score and a short human reason; the user's
  vector is also stored in `user_profiles.embedding`.
Mounted by agent/cli.py (`_mount_evals`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from tagloop.agent.cli_common import JsonFlag, emit
from tagloop.agent.settings import Settings, load_settings
from tagloop.tools.errors import InvalidInput, NotFound
from tagloop.tools.recommender import MAX_K

if TYPE_CHECKING:
    from tagloop.tools.recommender.train import TrainReport

out = Console(markup=False)
err = Console(stderr=True, markup=False)


def train_database(
    settings: Settings, *, seed: int = 7, progress: Callable[[str], None] | None = None
) -> TrainReport:
    """Train on the settings' database and commit: the service behind `tagloop train` and the demo."""
    from tagloop.agent.database import connect
    from tagloop.tools.recommender.train import train

    with connect(settings) as conn:
        report = train(conn, seed=seed, home=settings.home, progress=progress)
        conn.commit()
    return report


def train_command(
    seed: Annotated[int, typer.Option("--seed", help="Seed of the randomised SVDs.")] = 7,
    as_json: JsonFlag = False,
) -> None:
    """Train the recommender on the stored events and item tags; serve it from Postgres at once."""
    report = train_database(load_settings(), seed=seed, progress=err.print)
    data = report.summary()
    if as_json:
        emit(data, True)
        return
    table = Table(title=f"model {report.model_id} (dim {report.dim}) is now served")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("users", "items", "warm_items", "tags", "interactions"):
        table.add_row(key, f"{data[key]:,}")
    for step, secs in report.seconds.items():
        table.add_row(f"seconds: {step}", f"{secs:.2f}")
    for name, size in report.bytes.items():
        table.add_row(f"size: {name}", f"{size / 1e6:.1f} MB")
    out.print(table)


def recommend_command(
    user: Annotated[str, typer.Option("--user", help="The user id.")],
    k: Annotated[int, typer.Option("--k", min=1, max=MAX_K, help="How many items.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Top-k unseen items for one user from the trained model, with a reason each."""
    from tagloop.agent.database import connect
    from tagloop.tools.recommender import serving

    with connect(load_settings()) as conn:
        if conn.execute("select 1 from users where id = %(id)s", {"id": user}).fetchone() is None:
            raise NotFound(f"unknown user {user!r}")
        recs = serving.recommend(conn, user, k, now=datetime.now(UTC), store=True)
        conn.commit()
    if recs is None:
        raise InvalidInput("no trained model yet: run `tagloop train` first")
    if as_json:
        emit(
            {
                "user_id": user,
                "items": [
                    {
                        "item_id": r.item_id,
                        "title": r.title,
                        "provider": r.provider,
                        "score": round(r.score, 6),
                        "explanation": r.reason,
                        "cold": r.cold,
                    }
                    for r in recs
                ],
            },
            True,
        )
        return
    table = Table(title=f"recommendations for {user}")
    for column in ("#", "item", "provider", "score", "why"):
        table.add_column(column)
    for n, r in enumerate(recs, 1):
        table.add_row(str(n), r.title or r.item_id, r.provider or "", f"{r.score:.4f}", r.reason)
    out.print(table)
