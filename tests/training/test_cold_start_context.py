"""The context the through-the-ranker baselines are fit on, and its shared helpers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from idproxy_stream.training.cold_start_context import ColdStartContextError, frozen_ranker


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
