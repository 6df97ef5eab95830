"""The per-user decision graph, compiled once at module level and shared by scheduled, triggered
and manual runs:

    load_context → gather_candidates → choose ─┬→ compose → record ─┬→ deliver → END
                                                └──────────→ record  └──────────→ END
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from tagloop.agent import nodes
from tagloop.agent.context import RunContext
from tagloop.agent.state import RunInput, RunState


def build_graph():  # type: ignore[no-untyped-def]
    builder = StateGraph(RunState, context_schema=RunContext, input_schema=RunInput)
    builder.add_node(nodes.load_context)
    builder.add_node(nodes.gather_candidates)
    builder.add_node(nodes.choose)
    builder.add_node(nodes.compose)
    builder.add_node(nodes.record)
    builder.add_node(nodes.deliver)
    builder.add_edge(START, "load_context")
    builder.add_edge("load_context", "gather_candidates")
    builder.add_edge("gather_candidates", "choose")
    builder.add_conditional_edges("choose", nodes.anything_to_say, ["compose", "record"])
    builder.add_edge("compose", "record")
    builder.add_conditional_edges("record", nodes.anything_due, ["deliver", END])
    builder.add_edge("deliver", END)
    return builder.compile()


graph = build_graph()
