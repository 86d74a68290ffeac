"""CVAR: content-generated embeddings beat a random start; warm-up regenerates them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from idproxy_stream.eval.warmup import ColdEmbeddings, warmup_curve
from idproxy_stream.training.cvar import CvarSettings, fit_cvar

# the tiny split has ~7k mature samples: smaller batches give CVAR enough steps
SETTINGS = CvarSettings(batch_size=512)


@pytest.fixture(scope="module")
def fitted(cold_start_setting):
    return fit_cvar(cold_start_setting.context(seed=0), SETTINGS)


def curve(setting, cold_embeddings):
    return warmup_curve(
        setting.ranker,
        setting.id_table(),
        setting.cold_rows,
        cold_embeddings,
        setting.stages,
        setting.cold_test,
        learning_rate=1e-2,
        epochs=1,
    )


def test_proxies_are_finite_deterministic_for_a_seed_and_beat_random_init(
    cold_start_setting, fitted
):
    rows = cold_start_setting.cold_rows
    proxies = fitted.proxies(rows)
    assert proxies.shape == (len(rows), cold_start_setting.ranker.id_embedding_dim)
    assert torch.isfinite(proxies).all()
    again = fit_cvar(cold_start_setting.context(seed=0), SETTINGS)
    assert torch.equal(proxies, again.proxies(rows))
    assert cold_start_setting.cold_auc(proxies) > cold_start_setting.random_auc() + 0.1


def test_warm_up_regenerates_from_content_and_frequency_without_changing_the_model(
    cold_start_setting, fitted
):
    rows = cold_start_setting.cold_rows
    proxies_before = fitted.proxies(rows)
    state = fitted.cold_embeddings(rows)
    assert isinstance(state, ColdEmbeddings)
    assert torch.equal(state.embeddings().detach(), proxies_before)
    stage = cold_start_setting.stages[0]
    state.begin_stage(stage)
    seen = torch.tensor([int((stage.item == row).sum()) for row in rows])
    assert torch.equal(state.counts, seen) and seen.sum() == len(stage)
    with torch.no_grad():
        state.cold.add_(1.0)  # stands in for the generic optimiser's updates on the stage
    state.end_stage(stage)
    regenerated = state.embeddings().detach()
    with torch.no_grad():
        expected = state.networks.generate(fitted.content[rows], fitted.frequency(state.counts))
    assert torch.equal(regenerated, expected)
    assert (regenerated - proxies_before).abs().max() < 0.5  # the +1 was overwritten
    assert not torch.equal(regenerated, proxies_before)
    assert torch.equal(fitted.proxies(rows), proxies_before)


def test_without_regeneration_warm_up_is_the_generic_one(cold_start_setting, fitted):
    rows = cold_start_setting.cold_rows
    generic = curve(cold_start_setting, fitted.proxies(rows))
    plain_settings = dataclasses.replace(fitted.settings, regenerate_during_warmup=False)
    plain = dataclasses.replace(fitted, settings=plain_settings)
    # equal up to float summation order (thread counts differ between processes)
    assert curve(cold_start_setting, plain.cold_embeddings(rows)) == [
        pytest.approx(stage, rel=1e-7) for stage in generic
    ]
    assert curve(cold_start_setting, fitted.cold_embeddings(rows)) != generic


def test_fit_and_warm_up_leave_the_ranker_bit_identical(
    cold_start_setting, fitted, assert_ranker_unchanged
):
    fit_cvar(cold_start_setting.context(seed=4), dataclasses.replace(SETTINGS, iterations=1))
    curve(cold_start_setting, fitted.cold_embeddings(cold_start_setting.cold_rows))
    assert_ranker_unchanged()


def test_cold_start_embeddings_are_about_as_long_as_the_mature_ids(cold_start_setting, fitted):
    norm = float(fitted.proxies(cold_start_setting.cold_rows).norm(dim=1).mean())
    mature = cold_start_setting.mature_norm()
    assert mature / 2 < norm < 2 * mature


def test_the_content_path_reconstructs_held_out_ids_better_than_their_mean(cold_start_setting):
    setting = cold_start_setting
    validation = setting.validation()
    context = setting.context(0, validation)
    model = fit_cvar(context, SETTINGS)
    held = context.validation_rows()
    targets = context.id_table()[held]
    error = (model.proxies(held) - targets).pow(2).sum(1).mean()
    mean_error = context.id_table()[context.fit_rows_outside_validation()].mean(0) - targets
    assert error < mean_error.pow(2).sum(1).mean()


def test_validation_sets_choose_the_checkpoint_and_their_items_are_never_fit(cold_start_setting):
    setting = cold_start_setting
    honest = fit_cvar(setting.context(0, setting.validation()), SETTINGS)
    misled = fit_cvar(setting.context(0, setting.validation(misleading=True)), SETTINGS)
    for model in (honest, misled):
        recorded = [v for k, v in model.metrics.items() if k.startswith("selection_auc_checkpoint")]
        assert model.metrics["best_selection_auc"] == max(recorded)
    assert honest.metrics["best_checkpoint"] > misled.metrics["best_checkpoint"]
    context = setting.context(0, setting.validation())
    unread = fit_cvar(setting.with_flipped_labels_of(context), SETTINGS)
    assert torch.equal(unread.proxies(setting.cold_rows), honest.proxies(setting.cold_rows))
