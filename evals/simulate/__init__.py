"""tagloop.evals.simulate — `tagloop eval simulate`: policies A/B-tested on simulated users.

The world (`world.py`) takes real Last.fm users as the simulated audience: their true taste is
their whole listening profile, the agent only sees part of it. Every policy runs the real agent
graph day by day in its own copy of one world database (`database.py`, `loop.py`); delivered
messages turn into opens, clicks, likes, skips and unsubscribes by a response model
(`response.py`) and flow back through the ingest path, so the agent learns. `metrics.py` reduces
what happened to the SPEC §6 metrics with bootstrap intervals over users; `report_page.py` draws
the `--report` page; `command.py` is the CLI.
"""
