import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from idproxy_stream.encoders.layers import (
    LayerClusterError,
    LayerClusters,
    fit_layer_clusters,
    layer_similarity,
    merge_adjacent_layers,
    pool_layer_clusters,
)


def random_states(items: int, layers: int, width: int, seed: int) -> torch.Tensor:
    return torch.randn(items, layers, width, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=60, deadline=None)
@given(
    layers=st.integers(1, 9),
    clusters=st.integers(1, 12),
    similarity=st.sampled_from(["cka", "cosine"]),
    seed=st.integers(0, 1000),
)
def test_fitted_clusters_are_contiguous_cover_every_layer_once_and_respect_k(
    layers, clusters, similarity, seed
):
    fitted = fit_layer_clusters(random_states(6, layers, 5, seed), clusters, similarity)
    assert fitted.num_layers == layers
    assert fitted.num_clusters == min(clusters, layers)
    covered = [layer for start, stop in fitted.ranges for layer in range(start, stop)]
    assert covered == list(range(layers))
    assert fitted.boundaries[0] == 0
    assert all(b > a for a, b in zip(fitted.boundaries, fitted.boundaries[1:], strict=False))


def test_k_at_least_l_gives_one_layer_per_cluster():
    fitted = fit_layer_clusters(random_states(5, 4, 3, 0), num_clusters=10)
    assert fitted == LayerClusters.one_per_layer(4)


def test_k_below_one_is_refused():
    with pytest.raises(LayerClusterError, match="num_clusters must be >= 1"):
        fit_layer_clusters(random_states(5, 4, 3, 0), num_clusters=0)


def test_calibration_needs_two_items():
    with pytest.raises(LayerClusterError, match="N >= 2"):
        fit_layer_clusters(random_states(1, 4, 3, 0), num_clusters=2)


@pytest.mark.parametrize("similarity", ["cka", "cosine"])
def test_clustering_recovers_planted_groups_of_similar_layers(similarity):
    # Layers 0-1 share one signal, 2-4 another, 5 a third: the fit must cut at 2 and 5.
    generator = torch.Generator().manual_seed(3)
    signals = [torch.randn(64, 16, generator=generator) for _ in range(3)]
    group_of_layer = [0, 0, 1, 1, 1, 2]
    states = torch.stack(
        [signals[g] + 0.05 * torch.randn(64, 16, generator=generator) for g in group_of_layer],
        dim=1,
    )
    assert fit_layer_clusters(states, 3, similarity).boundaries == (0, 2, 5)


def test_cka_is_invariant_to_rotation_and_scale_of_a_layer():
    states = random_states(30, 2, 6, 1)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(2)))
    states[:, 1] = 3.0 * states[:, 0] @ rotation
    similarity = layer_similarity(states, "cka")
    torch.testing.assert_close(similarity[0, 1].item(), 1.0, rtol=0, atol=1e-9)


def test_merge_only_joins_neighbours_even_when_distant_layers_are_most_alike():
    similarity = torch.tensor(
        [[1.0, 0.1, 0.99], [0.1, 1.0, 0.2], [0.99, 0.2, 1.0]], dtype=torch.float64
    )
    assert merge_adjacent_layers(similarity, 2).boundaries == (0, 1)


@settings(max_examples=50, deadline=None)
@given(
    batch=st.integers(1, 6),
    layers=st.integers(1, 7),
    data=st.data(),
)
def test_pooling_commutes_with_permuting_the_batch(batch, layers, data):
    starts = (
        data.draw(st.sets(st.integers(1, layers - 1), max_size=layers - 1)) if layers > 1 else set()
    )
    clusters = LayerClusters(boundaries=(0, *sorted(starts)), num_layers=layers)
    states = random_states(batch, layers, 3, data.draw(st.integers(0, 100)))
    permutation = torch.tensor(data.draw(st.permutations(range(batch))))
    pooled = pool_layer_clusters(states, clusters)
    assert pooled.shape == (batch, clusters.num_clusters, 3)
    torch.testing.assert_close(
        pool_layer_clusters(states[permutation], clusters), pooled[permutation]
    )


def test_pooling_averages_the_layers_of_each_cluster():
    states = torch.arange(5, dtype=torch.float32).reshape(1, 5, 1)
    pooled = pool_layer_clusters(states, LayerClusters((0, 2, 4), 5))
    assert pooled.flatten().tolist() == [0.5, 2.5, 4.0]


def test_pooling_states_of_another_depth_is_refused():
    with pytest.raises(LayerClusterError, match="refit the clusters"):
        pool_layer_clusters(torch.zeros(2, 6, 3), LayerClusters((0, 3), 7))


def test_clusters_round_trip_through_json():
    clusters = LayerClusters((0, 3, 5), 7)
    assert LayerClusters.from_dict(json.loads(json.dumps(clusters.to_dict()))) == clusters
    assert clusters.cluster_of_layer() == (0, 0, 0, 1, 1, 2, 2)


@pytest.mark.parametrize(
    ("boundaries", "layers", "message"),
    [((1, 3), 5, "start at 0"), ((0, 3, 3), 5, "strictly increasing"), ((0, 5), 5, "< num_layers")],
)
def test_invalid_boundaries_are_refused(boundaries, layers, message):
    with pytest.raises(LayerClusterError, match=message):
        LayerClusters(boundaries, layers)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(LayerClusterError, match="exactly the keys"):
        LayerClusters.from_dict({"boundaries": [0], "num_layers": 2, "extra": 1})
