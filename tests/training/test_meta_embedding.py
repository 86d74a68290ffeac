"""Meta-Embedding: deterministic generated embeddings that beat a random start, ranker frozen."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from idproxy_stream.training.meta_embedding import (
    MetaEmbeddingSettings,
    PerItemSamples,
    fit_meta_embedding,
    meta_embedding_proxies,
)

SETTINGS = MetaEmbeddingSettings(epochs=20)


@pytest.fixture(scope="module")
def fitted(cold_start_setting):
    return fit_meta_embedding(cold_start_setting.context(seed=0), SETTINGS)


def test_proxies_are_finite_one_per_query_row_and_deterministic_for_a_seed(
    cold_start_setting, fitted
):
    rows = cold_start_setting.cold_rows
    proxies = fitted.proxies(rows)
    assert proxies.shape == (len(rows), cold_start_setting.ranker.id_embedding_dim)
    assert torch.isfinite(proxies).all()
    again = meta_embedding_proxies(cold_start_setting.context(seed=0), rows, SETTINGS)
    assert torch.equal(proxies, again)
    other_seed = meta_embedding_proxies(cold_start_setting.context(seed=1), rows, SETTINGS)
    assert not torch.equal(proxies, other_seed)


def test_meta_training_improves_on_the_untrained_generator_and_beats_random_init(
    cold_start_setting, fitted
):
    rows = cold_start_setting.cold_rows
    untrained = fit_meta_embedding(
        cold_start_setting.context(seed=0), dataclasses.replace(SETTINGS, epochs=0)
    )
    trained_auc = cold_start_setting.cold_auc(fitted.proxies(rows))
    assert fitted.metrics["best_epoch"] >= 1
    assert trained_auc > cold_start_setting.cold_auc(untrained.proxies(rows)) + 0.05
    assert trained_auc > cold_start_setting.random_auc() + 0.1


def test_fit_leaves_the_ranker_bit_identical(cold_start_setting, assert_ranker_unchanged):
    fit_meta_embedding(cold_start_setting.context(seed=2), dataclasses.replace(SETTINGS, epochs=2))
    assert_ranker_unchanged()


def test_fit_reads_nothing_of_cold_items(cold_start_setting, fitted):
    setting = cold_start_setting
    content = setting.features.global_embedding.clone()
    content[setting.cold_rows] = torch.randn(len(setting.cold_rows), content.shape[1])
    features = dataclasses.replace(setting.features, global_embedding=content)
    context = dataclasses.replace(setting.context(seed=0), features=features)
    refit = fit_meta_embedding(context, SETTINGS)
    mature = setting.mature_rows
    assert torch.equal(refit.proxies(mature), fitted.proxies(mature))


def test_mini_batches_a_and_b_are_disjoint_samples_of_their_own_item(cold_start_setting):
    context = cold_start_setting.context()
    rows = context.mature_rows[:6]
    samples = context.samples_of(rows)
    item_samples = PerItemSamples(samples, rows)
    a, a_owner, b, b_owner = item_samples.draw(
        torch.arange(len(rows)), shots=5, generator=torch.Generator().manual_seed(0)
    )
    assert set(a.tolist()).isdisjoint(b.tolist())
    assert torch.equal(samples.item[a], rows[a_owner])
    assert torch.equal(samples.item[b], rows[b_owner])
    assert torch.equal(torch.bincount(a_owner), torch.full((len(rows),), 5))


def test_the_untrained_generator_gives_the_fit_items_mean_id(cold_start_setting):
    context = cold_start_setting.context(seed=0)
    untrained = fit_meta_embedding(context, dataclasses.replace(SETTINGS, epochs=0))
    fit_rows, _ = context.split_mature(SETTINGS.holdout_fraction)
    mean_id = context.id_table()[fit_rows].mean(0)
    proxies = untrained.proxies(cold_start_setting.cold_rows)
    assert torch.allclose(proxies, mean_id.expand_as(proxies), atol=0.05)


def test_generated_embeddings_are_about_as_long_as_the_mature_ids(cold_start_setting, fitted):
    norm = float(fitted.proxies(cold_start_setting.cold_rows).norm(dim=1).mean())
    mature = cold_start_setting.mature_norm()
    assert mature / 2 < norm < 2 * mature


def test_validation_sets_choose_the_epoch_and_their_items_are_never_fit(cold_start_setting):
    setting = cold_start_setting
    honest = fit_meta_embedding(setting.context(0, setting.validation()), SETTINGS)
    misled = fit_meta_embedding(setting.context(0, setting.validation(misleading=True)), SETTINGS)
    for model in (honest, misled):
        recorded = [v for k, v in model.metrics.items() if k.startswith("selection_auc_epoch_")]
        assert model.metrics["best_selection_auc"] == max(recorded)
    assert honest.metrics["best_epoch"] > misled.metrics["best_epoch"]
    assert setting.cold_auc(honest.proxies(setting.cold_rows)) > setting.cold_auc(
        misled.proxies(setting.cold_rows)
    )
    context = setting.context(0, setting.validation())
    unread = fit_meta_embedding(setting.with_flipped_labels_of(context), SETTINGS)
    assert torch.equal(unread.proxies(setting.cold_rows), honest.proxies(setting.cold_rows))
