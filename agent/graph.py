"""The per-user decision graph, compiled once at module level and shared by scheduled, triggered
and manual runs (the runner, the worker and the HTTP API all invoke `graph`):

    load_context → gather_candidates → apply_policies ─┬→ choose_channel_time ─┬→ compose → enqueue ─┐
                                                        │  (holdout / nothing)  │  (no consent / capped)│
                                                        └───────────────────────┴──────────→ record ←─┘ → END

Delivery is not a node: messages wait in the outbox until their send time (or, with send_now, the
runner delivers them right after the decisions are committed), so no external call ever happens
inside a decision transaction.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from tagloop.agent import nodes
from tagloop.agent.context import RunContext
from tagloop.agent.state import RunInput, RunState


def build_graph() -> CompiledStateGraph[Any, Any, Any, Any]:
    builder = StateGraph(RunState, context_schema=RunContext, input_schema=RunInput)
    builder.add_node(nodes.load_context)
    builder.add_node(nodes.gather_candidates)
    builder.add_node(nodes.apply_policies)
    builder.add_node(nodes.choose_channel_time)
    builder.add_node(nodes.compose)
    builder.add_node(nodes.enqueue)
    builder.add_node(nodes.record)
    builder.add_edge(START, "load_context")
    builder.add_edge("load_context", "gather_candidates")
    builder.add_edge("gather_candidates", "apply_policies")
    builder.add_conditional_edges("apply_policies", nodes.after_policies, ["choose_channel_time", "record"])
    builder.add_conditional_edges("choose_channel_time", nodes.after_timing, ["compose", "record"])
    builder.add_edge("compose", "enqueue")
    builder.add_edge("enqueue", "record")
    builder.add_edge("record", END)
    return builder.compile()


graph = build_graph()
