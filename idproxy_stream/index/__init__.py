"""ID-space Faiss index and the neighbour/void check.

- ``id_space.py``: :class:`IdSpace`, the ranker's ID table with its fingerprint.
- ``faiss_index.py``: :class:`IdIndex`, Faiss over the mature IDs (Flat / HNSW / IVF).
- ``void.py``: :class:`NeighbourChecker`, the kNN void check and the void policy.
"""

from idproxy_stream.index.faiss_index import IdIndex, IndexBuildError
from idproxy_stream.index.id_space import (
    IdSpace,
    IdSpaceError,
    IdSpaceMismatchError,
    id_space_fingerprint,
)
from idproxy_stream.index.void import NeighbourChecker, VoidDecision, calibrate_void_threshold

__all__ = [
    "IdIndex",
    "IdSpace",
    "IdSpaceError",
    "IdSpaceMismatchError",
    "IndexBuildError",
    "NeighbourChecker",
    "VoidDecision",
    "calibrate_void_threshold",
    "id_space_fingerprint",
]
