"""Helpers shared by several test folders (importable because tests/ is on sys.path)."""

from __future__ import annotations

import numpy as np

from idproxy_stream.data.schema import RecDataset
from idproxy_stream.encoders.features import FeatureTable
from idproxy_stream.encoders.layers import LayerClusters

PLANTED_DIM = 24


# Settings of a model bundle small enough to train in seconds (stream and cluster tests).
TINY_TRAINING = {
    "data": {
        "synthetic": {
            "num_items": 240,
            "num_users": 120,
            "interactions_per_user": 40,
            "with_images": False,
        }
    },
    "split": {"warm_min_interactions": 30, "cold_min": 16, "cold_max": 30, "warmup_size": 5},
    "ranker": {"epochs": 1},
    "stage1": {"epochs": 10, "tau": 10},
    "stage2": {"epochs": 1},
    "encoder": {"text": {"num_threads": 2}, "layers": {"calibration_size": 64}},
    "index": {"k": 5},
}


def planted_feature_table(dataset: RecDataset, noise: float = 0.1, seed: int = 0) -> FeatureTable:
    """(N, D) global and (N, 2, D) cluster states that are noisy linear maps of true factors."""
    generator = np.random.default_rng(seed)
    factors = np.asarray(dataset.metadata["item_factors"], dtype=np.float32)
    bias = np.asarray(dataset.metadata["item_bias"], dtype=np.float32)[:, None]
    latent = np.concatenate([factors, bias], axis=1)
    projection = generator.normal(size=(latent.shape[1], PLANTED_DIM)).astype(np.float32)
    global_embedding = latent @ projection
    global_embedding += noise * generator.normal(size=global_embedding.shape).astype(np.float32)
    second = latent @ generator.normal(size=projection.shape).astype(np.float32)
    cluster_states = np.stack([global_embedding, second], axis=1).astype(np.float32)
    count = len(dataset.items)
    return FeatureTable(
        item_ids=dataset.items["item_id"].to_numpy(np.int64),
        global_embedding=global_embedding.astype(np.float32),
        cluster_states=cluster_states,
        clusters=LayerClusters(boundaries=(0, 1), num_layers=2),
        encoder_fingerprint="planted-test-features",
        image_errors=np.array([None] * count, dtype=object),
        text_truncated=np.zeros(count, dtype=bool),
    )
