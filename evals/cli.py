"""`tagloop eval …`: the offline evaluation commands of SPEC §6.

Each command lives beside the code it evaluates and is registered here, so this module stays a
table of contents.
"""

from __future__ import annotations

import typer

from tagloop.evals.ope.command import ope_command
from tagloop.evals.recsys_eval import recsys_command
from tagloop.evals.simulate.command import simulate_command
from tagloop.evals.tagging_eval import tagging_command

app = typer.Typer(
    help="Offline evaluation: recommender, tagging, off-policy estimators, simulator.", no_args_is_help=True
)
app.command("tagging")(tagging_command)
app.command("ope")(ope_command)
app.command("simulate")(simulate_command)
app.command("recsys")(recsys_command)
