"""Content features and ID embeddings lined up by the ranker's item rows.

Training code indexes everything by the ranker's item row (the row of its ID table), so a batch's
``item`` and ``history`` tensors index features and ID embeddings alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from idproxy_stream.encoders.features import FeatureTable
from idproxy_stream.encoders.layers import LayerClusters


@dataclass(frozen=True)
class RowFeatures:
    """Encoder features by ranker item row.

    global_embedding: (N_rows, D_enc) float32, zeros where an item has no features.
    cluster_states: (N_rows, K, D_enc) float32.
    has_features: (N_rows,) bool.
    clusters, encoder_fingerprint: copied from the feature table.
    """

    global_embedding: torch.Tensor
    cluster_states: torch.Tensor
    has_features: torch.Tensor
    clusters: LayerClusters
    encoder_fingerprint: str

    @property
    def encoder_dim(self) -> int:
        return int(self.global_embedding.shape[1])

    @classmethod
    def from_table(cls, table: FeatureTable, item_rows: np.ndarray, num_rows: int) -> RowFeatures:
        """Scatter ``table`` (N items) to ranker rows; ``item_rows`` (N,) is each item's row."""
        rows = torch.as_tensor(np.asarray(item_rows, dtype=np.int64))
        known = rows > 0
        global_embedding = torch.zeros(num_rows, table.hidden_size)
        cluster_states = torch.zeros(num_rows, *table.cluster_states.shape[1:])
        global_embedding[rows[known]] = torch.from_numpy(table.global_embedding)[known]
        cluster_states[rows[known]] = torch.from_numpy(table.cluster_states)[known]
        has_features = torch.zeros(num_rows, dtype=torch.bool)
        has_features[rows[known]] = True
        return cls(
            global_embedding=global_embedding,
            cluster_states=cluster_states,
            has_features=has_features,
            clusters=table.clusters,
            encoder_fingerprint=table.encoder_fingerprint,
        )
