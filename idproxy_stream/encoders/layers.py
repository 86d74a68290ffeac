"""Grouping an encoder's L layer states into K contiguous clusters, and pooling by cluster.

IDProxy's fine adaptor reads a few layer groups instead of every layer. The groups are fit
once on a calibration sample: start with one cluster per layer and repeatedly merge the two
*neighbouring* clusters whose layers are most alike, until K remain. Likeness of two layers
is linear CKA (Kornblith et al., 2019) of their (N, D) item-state matrices, or the cosine of
the mean-centred matrices; likeness of two clusters is the average over their layer pairs.
Only neighbours merge, so every cluster is a contiguous run of layers.

Example::

    clusters = fit_layer_clusters(calibration.layer_states, num_clusters=3)   # (N, L, D)
    clusters.boundaries                                    # e.g. (0, 2, 5) for L = 7
    pooled = pool_layer_clusters(output.layer_states, clusters)                # (B, 3, D)
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

from idproxy_stream.errors import IdProxyError

logger = logging.getLogger(__name__)

Similarity = Literal["cka", "cosine"]


class LayerClusterError(IdProxyError, ValueError):
    """Layer clusters are invalid or do not fit the states given; the message says what to fix."""


@dataclass(frozen=True)
class LayerClusters:
    """K contiguous groups of L layers.

    boundaries: start layer of each cluster; ``boundaries[0] == 0``, strictly increasing,
        all ``< num_layers``. Cluster k covers layers ``boundaries[k] .. boundaries[k+1] - 1``
        (the last one runs to ``num_layers - 1``).
    num_layers: L.
    """

    boundaries: tuple[int, ...]
    num_layers: int

    def __post_init__(self) -> None:
        bounds = tuple(int(b) for b in self.boundaries)
        object.__setattr__(self, "boundaries", bounds)
        if self.num_layers < 1:
            raise LayerClusterError(f"num_layers must be >= 1, got {self.num_layers}")
        if not bounds or bounds[0] != 0:
            raise LayerClusterError(f"boundaries must start at 0, got {bounds}")
        if any(b >= a for a, b in zip(bounds[1:], bounds, strict=False)):
            raise LayerClusterError(f"boundaries must be strictly increasing, got {bounds}")
        if bounds[-1] >= self.num_layers:
            raise LayerClusterError(
                f"boundaries {bounds} must all be < num_layers={self.num_layers}"
            )

    @property
    def num_clusters(self) -> int:
        """K."""
        return len(self.boundaries)

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """``(start, stop)`` layer range of each cluster, stop exclusive."""
        stops = (*self.boundaries[1:], self.num_layers)
        return tuple(zip(self.boundaries, stops, strict=True))

    def cluster_of_layer(self) -> tuple[int, ...]:
        """For each of the L layers, the index of its cluster."""
        return tuple(k for k, (start, stop) in enumerate(self.ranges) for _ in range(start, stop))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, stored beside features and in the model artefact."""
        return {"boundaries": list(self.boundaries), "num_layers": self.num_layers}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerClusters:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`LayerClusterError`."""
        if set(data) != {"boundaries", "num_layers"}:
            raise LayerClusterError(
                "layer clusters need exactly the keys boundaries and num_layers, "
                f"got {sorted(data)}"
            )
        return cls(boundaries=tuple(data["boundaries"]), num_layers=int(data["num_layers"]))

    @classmethod
    def one_per_layer(cls, num_layers: int) -> LayerClusters:
        """L clusters of one layer each."""
        return cls(boundaries=tuple(range(num_layers)), num_layers=num_layers)


def _centred(states: torch.Tensor) -> torch.Tensor:
    """(N, L, D) -> (L, N, D) float64, each layer's features centred over the N items."""
    layers = states.double().transpose(0, 1)
    return layers - layers.mean(dim=1, keepdim=True)


def linear_cka_matrix(layer_states: torch.Tensor) -> torch.Tensor:
    """Linear CKA between every pair of layers: ``(N, L, D) -> (L, L)`` in [0, 1].

    Uses the N x N Gram form, ``CKA(a, b) = <K_a, K_b> / (|K_a| |K_b|)`` with ``K = X X^T``
    of the centred states. A layer with no variance gets similarity 0 to every other layer.
    """
    centred = _centred(layer_states)
    grams = centred @ centred.transpose(1, 2)  # (L, N, N)
    flat = grams.flatten(start_dim=1)
    return _normalised_inner_products(flat)


def centred_cosine_matrix(layer_states: torch.Tensor) -> torch.Tensor:
    """Cosine between every pair of mean-centred layer matrices: ``(N, L, D) -> (L, L)``."""
    return _normalised_inner_products(_centred(layer_states).flatten(start_dim=1))


def _normalised_inner_products(rows: torch.Tensor) -> torch.Tensor:
    norms = rows.norm(dim=1)
    products = rows @ rows.T
    similarity = products / (norms[:, None] * norms[None, :])
    similarity = torch.nan_to_num(similarity, nan=0.0, posinf=0.0, neginf=0.0)
    similarity.fill_diagonal_(1.0)
    return similarity


def layer_similarity(layer_states: torch.Tensor, similarity: Similarity = "cka") -> torch.Tensor:
    """``(N, L, D) -> (L, L)`` similarity of layers by ``"cka"`` or ``"cosine"``."""
    if layer_states.ndim != 3 or layer_states.shape[0] < 2:
        raise LayerClusterError(
            f"calibration states must be (N >= 2, L, D), got {tuple(layer_states.shape)}"
        )
    if similarity == "cka":
        return linear_cka_matrix(layer_states)
    if similarity == "cosine":
        return centred_cosine_matrix(layer_states)
    raise LayerClusterError(f"similarity must be 'cka' or 'cosine', got {similarity!r}")


def merge_adjacent_layers(similarity: torch.Tensor, num_clusters: int) -> LayerClusters:
    """Agglomerate L layers into ``num_clusters`` contiguous clusters from an (L, L) similarity.

    Each step merges the neighbouring pair with the highest average similarity between their
    layers (the lower pair on ties). ``num_clusters >= L`` gives one layer per cluster.
    """
    num_layers = similarity.shape[0]
    if num_clusters < 1:
        raise LayerClusterError(f"num_clusters must be >= 1, got {num_clusters}")
    target = min(num_clusters, num_layers)
    clusters = [[layer] for layer in range(num_layers)]
    while len(clusters) > target:
        links = [
            float(similarity[left][:, right].mean()) for left, right in itertools.pairwise(clusters)
        ]
        best = max(range(len(links)), key=lambda index: (links[index], -index))
        clusters[best : best + 2] = [clusters[best] + clusters[best + 1]]
    return LayerClusters(boundaries=tuple(c[0] for c in clusters), num_layers=num_layers)


def fit_layer_clusters(
    layer_states: torch.Tensor, num_clusters: int, similarity: Similarity = "cka"
) -> LayerClusters:
    """Fit K contiguous layer clusters on calibration states ``(N, L, D)``.

    ``num_clusters`` larger than L is clamped to L (one layer per cluster) with a log line;
    below 1 raises :class:`LayerClusterError`.
    """
    num_layers = layer_states.shape[1] if layer_states.ndim == 3 else 0
    if num_clusters > num_layers > 0:
        logger.info(
            "num_clusters=%d >= L=%d layers: one layer per cluster", num_clusters, num_layers
        )
    clusters = merge_adjacent_layers(layer_similarity(layer_states, similarity), num_clusters)
    logger.info("layer clusters over L=%d: boundaries %s", num_layers, clusters.boundaries)
    return clusters


def pool_layer_clusters(layer_states: torch.Tensor, clusters: LayerClusters) -> torch.Tensor:
    """Mean of the layer states within each cluster: ``(B, L, D) -> (B, K, D)``."""
    if layer_states.ndim != 3 or layer_states.shape[1] != clusters.num_layers:
        raise LayerClusterError(
            f"layer states {tuple(layer_states.shape)} do not match clusters fit on "
            f"L={clusters.num_layers} layers: refit the clusters for this encoder"
        )
    return torch.stack(
        [layer_states[:, start:stop].mean(dim=1) for start, stop in clusters.ranges], dim=1
    )
