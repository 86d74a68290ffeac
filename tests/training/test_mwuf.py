"""MWUF: the meta networks warm the embeddings during warm-up; the ranker stays frozen."""

from __future__ import annotations

import pytest
import torch

from idproxy_stream.eval.warmup import ColdEmbeddings, warmup_curve
from idproxy_stream.training import baselines
from idproxy_stream.training.mwuf import MwufSettings, fit_mwuf, user_representations

# the tiny split has ~100 mature items: a few passes give the meta networks enough steps
SETTINGS = MwufSettings(epochs=5)


@pytest.fixture(scope="module")
def fitted(cold_start_setting):
    return fit_mwuf(cold_start_setting.context(seed=0), SETTINGS)


def curve(setting, cold_embeddings):
    return [
        point["auc"]
        for point in warmup_curve(
            setting.ranker,
            setting.id_table(),
            setting.cold_rows,
            cold_embeddings,
            setting.stages,
            setting.cold_test,
            learning_rate=1e-2,
            epochs=1,
        )
    ]


def test_cold_start_embeddings_are_finite_deterministic_and_beat_random_init(
    cold_start_setting, fitted
):
    rows = cold_start_setting.cold_rows
    embeddings = fitted.cold_start_embeddings(rows)
    assert embeddings.shape == (len(rows), cold_start_setting.ranker.id_embedding_dim)
    assert torch.isfinite(embeddings).all()
    again = fit_mwuf(cold_start_setting.context(seed=0), SETTINGS)
    assert torch.equal(embeddings, again.cold_start_embeddings(rows))
    assert cold_start_setting.cold_auc(embeddings) > cold_start_setting.random_auc() + 0.03


def test_cold_start_is_scaled_base_with_zero_shift(cold_start_setting, fitted):
    rows = cold_start_setting.cold_rows
    state = fitted.cold_embeddings(rows)
    assert isinstance(state, ColdEmbeddings)
    assert torch.equal(state.training_embeddings().detach(), fitted.base.expand(len(rows), -1))
    networks = fitted.networks
    scale = networks.scale(networks.scaler(fitted.content[rows]))
    assert torch.allclose(state.embeddings(), scale * fitted.base)
    # the meta scaling is really applied: the warmed embedding is not the plain parameter
    assert not torch.allclose(state.embeddings(), state.training_embeddings().detach(), atol=1e-3)


def test_a_stage_users_shift_exactly_the_items_they_interacted_with(cold_start_setting, fitted):
    rows = cold_start_setting.cold_rows
    state = fitted.cold_embeddings(rows)
    before = state.embeddings()
    stage = cold_start_setting.stages[0]
    state.begin_stage(stage)
    after = state.embeddings()
    users, has_user = user_representations(
        fitted.id_table, stage.history, excluded_rows=state.excluded
    )
    interacted = torch.isin(rows, stage.item[has_user])
    assert interacted.any() and torch.equal(state.user_count > 0, interacted)
    changed = (after - before).abs().sum(1) > 0
    assert torch.equal(changed, interacted)
    first = int(torch.nonzero(interacted)[0])
    mine = (stage.item == rows[first]) & has_user
    assert torch.allclose(state.user_means()[0][first], users[mine].mean(0), atol=1e-6)


def test_meta_warm_up_beats_plain_warm_up_from_the_same_mean_start(cold_start_setting, fitted):
    setting = cold_start_setting
    mean_start = baselines.mean_id_proxies(
        setting.id_table()[setting.mature_rows], len(setting.cold_rows)
    )
    plain = curve(setting, mean_start)
    meta = curve(setting, fitted.cold_embeddings(setting.cold_rows))
    assert meta[-1] > plain[-1] + 0.05
    assert meta[1] > plain[1]


def test_fit_and_warm_up_leave_the_ranker_and_the_global_rng_unchanged(
    cold_start_setting, assert_ranker_unchanged
):
    rng_state = torch.random.get_rng_state()
    model = fit_mwuf(cold_start_setting.context(seed=3), MwufSettings())
    curve(cold_start_setting, model.cold_embeddings(cold_start_setting.cold_rows))
    assert_ranker_unchanged()
    assert torch.equal(torch.random.get_rng_state(), rng_state)


def test_warmed_embeddings_are_about_as_long_as_the_mature_ids_once_users_arrive(
    cold_start_setting, fitted
):
    # at cold start MWUF is the scaled mean ID by design (no users yet), shorter than any ID;
    # from the first warm-up stage on the shift reads the item's users
    setting = cold_start_setting
    state = fitted.cold_embeddings(setting.cold_rows)
    warmup_curve(
        setting.ranker,
        setting.id_table(),
        setting.cold_rows,
        state,
        setting.stages[:1],
        setting.cold_test,
        learning_rate=1e-2,
        epochs=1,
    )
    norm = float(state.embeddings().norm(dim=1).mean())
    mature = setting.mature_norm()
    assert mature / 2 < norm < 2 * mature


def test_validation_sets_choose_the_epoch_and_their_items_are_never_fit(cold_start_setting):
    setting = cold_start_setting
    context = setting.context(0, setting.validation())
    honest = fit_mwuf(context, SETTINGS)
    misled = fit_mwuf(setting.context(0, setting.validation(misleading=True)), SETTINGS)
    for model in (honest, misled):
        recorded = [v for k, v in model.metrics.items() if k.startswith("selection_auc_epoch_")]
        assert model.metrics["best_selection_auc"] == max(recorded)
    assert honest.metrics["best_epoch"] != misled.metrics["best_epoch"]
    fit_rows = context.fit_rows_outside_validation()
    assert not torch.isin(context.validation_rows(), fit_rows).any()
    assert torch.allclose(honest.base, context.id_table()[fit_rows].mean(0))
    unread = fit_mwuf(setting.with_flipped_labels_of(context), SETTINGS)
    rows = setting.cold_rows
    assert torch.equal(unread.cold_start_embeddings(rows), honest.cold_start_embeddings(rows))
