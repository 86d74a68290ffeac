"""The context the through-the-ranker baselines are fit on, and its shared helpers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from idproxy_stream.training.cold_start_context import (
    BestCheckpoint,
    ColdStartContextError,
    frozen_ranker,
)


def test_held_out_mature_items_are_a_seeded_disjoint_tenth(cold_start_setting):
    context = cold_start_setting.context(seed=0)
    fit, held = context.split_mature(0.1)
    again_fit, again_held = context.split_mature(0.1)
    assert torch.equal(fit, again_fit) and torch.equal(held, again_held)
    assert len(held) == round(0.1 * len(context.mature_rows))
    assert set(fit.tolist()).isdisjoint(held.tolist())
    assert sorted([*fit.tolist(), *held.tolist()]) == sorted(context.mature_rows.tolist())
    other_fit, _ = cold_start_setting.context(seed=1).split_mature(0.1)
    assert not torch.equal(fit, other_fit)


def test_a_context_with_padding_rows_or_misshapen_counts_is_refused(cold_start_setting):
    context = cold_start_setting.context()
    with pytest.raises(ColdStartContextError, match="row 0 is padding"):
        dataclasses.replace(context, mature_rows=torch.tensor([0, 3, 4]))
    with pytest.raises(ColdStartContextError, match="interaction_counts"):
        dataclasses.replace(context, item_counts=context.item_counts[:-1])


def test_frozen_ranker_restores_flags_and_mode_even_after_an_error(cold_start_setting):
    ranker = cold_start_setting.ranker
    ranker.train()
    try:
        with pytest.raises(RuntimeError), frozen_ranker(ranker):
            assert not any(parameter.requires_grad for parameter in ranker.parameters())
            assert not ranker.training
            raise RuntimeError("fit failed")
        assert all(parameter.requires_grad for parameter in ranker.parameters())
        assert ranker.training
    finally:
        ranker.eval()


def test_validation_items_are_left_out_of_the_fit_rows(cold_start_setting):
    validation = cold_start_setting.validation()
    context = cold_start_setting.context(seed=0, validation=validation)
    fit_rows, chosen_by = context.selection_split(0.1)
    held = torch.unique(validation["mature"].item)
    assert chosen_by.keys() == {"mature"} and chosen_by["mature"] is validation["mature"]
    assert set(fit_rows.tolist()) == set(context.mature_rows.tolist()) - set(held.tolist())
    every_item = {"all": context.samples_of(context.mature_rows)}
    with pytest.raises(ColdStartContextError, match="outside the validation"):
        cold_start_setting.context(seed=0, validation=every_item)


def test_without_validation_sets_a_tenth_of_the_mature_items_chooses(cold_start_setting):
    context = cold_start_setting.context(seed=0)
    fit_rows, chosen_by = context.selection_split(0.1)
    _, held = context.split_mature(0.1)
    assert torch.equal(fit_rows, context.split_mature(0.1)[0])
    assert torch.equal(torch.unique(chosen_by["mature"].item), held)
    assert context.selection_split(0.0)[1] == {}


def test_best_checkpoint_keeps_the_best_state_and_stops_after_patience():
    module = torch.nn.Linear(1, 1, bias=False)
    best = BestCheckpoint(module, patience=2)
    scores = [0.5, 0.7, 0.6, 0.7]
    stops = []
    for index, score in enumerate(scores):
        module.weight.data.fill_(float(index))
        stops.append(best.record(index, score))
    assert stops == [False, False, False, True]  # a tie is no improvement
    best.restore()
    assert float(module.weight.detach()) == 1.0
    assert best.metrics()["best_selection_auc"] == 0.7 and best.metrics()["best_epoch"] == 1.0
    unscored = BestCheckpoint(module, patience=1)
    assert not any(unscored.record(index, float("nan")) for index in range(3))
    assert unscored.best_index == 2


def test_the_selection_score_is_the_mean_auc_over_usable_sets(cold_start_setting):
    context = cold_start_setting.context(seed=0)
    table = context.id_table()
    validation = cold_start_setting.validation()
    one_label = validation["mature"].subset(validation["mature"].label > 0.5)
    scores = context.selection_scores(
        {"mature": validation["mature"], "positives": one_label}, lambda rows: table[rows]
    )
    assert scores.keys() == {"mature", "selection"}
    assert scores["selection"] == scores["mature"] > 0.5
