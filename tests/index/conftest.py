"""Synthetic ID spaces for the index tests: clustered ID embeddings, like a trained ranker's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from idproxy_stream.index import IdSpace

TAU = 20


@dataclass(frozen=True)
class ClusteredSpace:
    """An ID space whose embeddings form ``centres.shape[0]`` tight clusters.

    centres: (C, D) unit cluster directions; ``sample`` draws more in-distribution vectors.
    """

    id_space: IdSpace
    centres: np.ndarray
    noise: float

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count, D) new vectors from the same clusters, at raw ID-like norms."""
        labels = rng.integers(0, self.centres.shape[0], count)
        directions = self.centres[labels] + self.noise * rng.normal(size=(count, self.dim))
        return (directions * rng.uniform(0.5, 2.0, (count, 1))).astype(np.float32)

    def void_vectors(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """(count, D) vectors orthogonal to every cluster centre: far from all mature IDs."""
        raw = rng.normal(size=(count, self.dim))
        basis, _ = np.linalg.qr(self.centres.T)  # (D, C) orthonormal span of the centres
        orthogonal = raw - (raw @ basis) @ basis.T
        return orthogonal.astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.centres.shape[1])


def make_clustered_space(
    num_items: int = 3_000,
    dim: int = 16,
    num_clusters: int = 8,
    noise: float = 0.08,
    seed: int = 0,
) -> ClusteredSpace:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    space = ClusteredSpace(id_space=None, centres=centres, noise=noise)  # type: ignore[arg-type]
    embeddings = space.sample(num_items, rng)
    # Ids far from row numbers so a row/id mix-up shows; a quarter of the items are immature.
    item_ids = rng.choice(10**12, num_items, replace=False).astype(np.int64)
    counts = np.where(rng.random(num_items) < 0.25, rng.integers(0, TAU, num_items), 100)
    id_space = IdSpace.from_arrays(item_ids, embeddings, counts)
    return ClusteredSpace(id_space=id_space, centres=centres, noise=noise)


@pytest.fixture(scope="module")
def clustered() -> ClusteredSpace:
    return make_clustered_space()
