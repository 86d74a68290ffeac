"""Baselines recover a planted content -> ID mapping the way each should."""

from __future__ import annotations

import torch

from idproxy_stream.training import baselines


def planted(num_train=300, num_query=60, encoder_dim=16, id_dim=4, noise=0.01, seed=0):
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_train + num_query, encoder_dim, generator=generator)
    mapping = torch.randn(encoder_dim, id_dim, generator=generator)
    targets = inputs @ mapping + 1.0 + noise * torch.randn(len(inputs), id_dim, generator=generator)
    return inputs[:num_train], targets[:num_train], inputs[num_train:], targets[num_train:]


def mse(a, b):
    return float((a - b).pow(2).mean())


def test_ridge_recovers_a_linear_mapping_and_beats_the_mean():
    x, y, xq, yq = planted()
    ridge = baselines.ridge_proxies(x, y, xq)
    mean = baselines.mean_id_proxies(y, len(xq))
    assert mse(ridge, yq) < 0.01 * mse(mean, yq)


def test_ridge_penalty_grows_when_targets_are_noise():
    x, _, _, _ = planted()
    noise_targets = torch.randn(len(x), 4, generator=torch.Generator().manual_seed(5))
    signal_penalty = baselines.choose_ridge_penalty(*planted()[:2])
    noise_penalty = baselines.choose_ridge_penalty(x, noise_targets)
    assert noise_penalty > signal_penalty


def test_knn_returns_the_neighbours_id_for_a_duplicate_item():
    x, y, _, _ = planted()
    proxies = baselines.knn_proxies(x, y, x[:5], k=5, temperature=0.001)
    assert torch.allclose(proxies, y[:5], atol=1e-4)


def test_mlp_baselines_learn_the_mapping_better_than_the_mean():
    x, y, xq, yq = planted(noise=0.05)
    mean_error = mse(baselines.mean_id_proxies(y, len(xq)), yq)
    for proxies in (
        baselines.regression_mlp_proxies(x, y, xq, epochs=150, hidden=64),
        baselines.dropoutnet_proxies(x, y, xq, epochs=150, hidden=64),
    ):
        assert proxies.shape == yq.shape
        assert mse(proxies, yq) < 0.3 * mean_error


def test_random_proxies_match_the_spread_of_mature_ids():
    _, y, _, _ = planted()
    proxies = baselines.random_proxies(y, 5000, seed=1)
    assert torch.allclose(proxies.std(0), y.std(0), rtol=0.1)
    assert torch.equal(proxies, baselines.random_proxies(y, 5000, seed=1))
