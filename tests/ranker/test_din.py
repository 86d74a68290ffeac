"""The RankerAdapter override hook of the reference ranker."""

from __future__ import annotations

import torch

from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.training import predict_logits, table_override


def test_reference_ranker_implements_the_adapter_protocol(tiny_ranker):
    assert isinstance(tiny_ranker, RankerAdapter)
    assert tiny_ranker.id_embedding_table().shape[1] == tiny_ranker.id_embedding_dim


def test_override_equal_to_the_id_embedding_gives_identical_predictions(tiny_ranker, encoded_parts):
    _, parts = encoded_parts
    samples = parts["cold_test"]
    plain = predict_logits(tiny_ranker, samples)
    table = tiny_ranker.id_embedding_table().detach().clone()
    overridden = predict_logits(tiny_ranker, samples, override=table_override(table))
    assert torch.equal(torch.from_numpy(plain), torch.from_numpy(overridden))


def test_a_different_candidate_override_changes_predictions(tiny_ranker, encoded_parts):
    _, parts = encoded_parts
    batch = parts["warm_test"].batch(slice(0, 64))
    tiny_ranker.eval()
    with torch.no_grad():
        plain = tiny_ranker(batch)
        candidate = tiny_ranker.item_id_embedding(batch.item) + 0.5
        changed = tiny_ranker(batch, candidate_item_embedding=candidate)
    assert not torch.allclose(plain, changed)


def test_a_different_history_override_changes_predictions_through_attention(
    tiny_ranker, encoded_parts
):
    _, parts = encoded_parts
    samples = parts["warm_test"]
    has_history = (samples.history > 0).any(1)
    batch = samples.subset(has_history).batch(slice(0, 64))
    tiny_ranker.eval()
    with torch.no_grad():
        plain = tiny_ranker(batch)
        history = tiny_ranker.item_id_embedding(batch.history) * 3.0 + 0.3
        changed = tiny_ranker(batch, history_item_embedding=history)
    assert not torch.allclose(plain, changed)


def test_padding_positions_of_the_history_override_are_ignored(tiny_ranker, encoded_parts):
    _, parts = encoded_parts
    batch = parts["warm_test"].batch(slice(0, 64))
    tiny_ranker.eval()
    history = tiny_ranker.item_id_embedding(batch.history)
    noisy = history.clone()
    noisy[batch.history == 0] = 100.0
    with torch.no_grad():
        assert torch.allclose(
            tiny_ranker(batch, history_item_embedding=history),
            tiny_ranker(batch, history_item_embedding=noisy),
        )
