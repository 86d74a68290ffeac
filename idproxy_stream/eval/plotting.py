"""One colour and one label per method, shared by every chart the evaluation draws.

Every plot under ``docs/eval`` takes its colours from :data:`METHOD_COLOURS`, so IDProxy is the
same red in the bar chart, the warm-up curves and the suite summary, the oracles the same greys,
and a reader can follow a method from one picture to the next.
"""

from __future__ import annotations

METHOD_LABELS = {
    "random": "random init",
    "mean_id": "mean ID",
    "ridge": "ridge (content -> ID)",
    "regression_mlp": "regression MLP (CB2CF-style)",
    "dropoutnet": "DropoutNet-style",
    "knn": "kNN average of mature IDs",
    "meta_embedding": "Meta-Embedding",
    "mwuf": "MWUF",
    "cvar": "CVAR",
    "idproxy_stage1": "IDProxy Stage 1 only",
    "idproxy": "IDProxy Stage 1 + 2",
    "oracle_a": "oracle: ranker retrained with a",
    "oracle_ab": "oracle: ranker retrained with a+b",
    "oracle_abc": "oracle: ranker retrained with a+b+c",
}

METHOD_COLOURS = {
    "random": "#bcbd22",
    "mean_id": "#7f7f7f",
    "ridge": "#1f77b4",
    "regression_mlp": "#17becf",
    "dropoutnet": "#9467bd",
    "knn": "#8c564b",
    "meta_embedding": "#2ca02c",
    "mwuf": "#e377c2",
    "cvar": "#ff7f0e",
    "idproxy_stage1": "#f4a6a6",
    "idproxy": "#d62728",
    "oracle_a": "#c7c7c7",
    "oracle_ab": "#969696",
    "oracle_abc": "#525252",
}


def method_label(method: str) -> str:
    """The human-readable name of ``method`` (its key when unknown)."""
    return METHOD_LABELS.get(method, method)


def method_colour(method: str) -> str:
    """The colour of ``method`` in every chart (black when unknown)."""
    return METHOD_COLOURS.get(method, "#000000")
