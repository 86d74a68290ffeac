"""Checks every shipped RankerAdapter must pass (tests/ranker/test_*_din.py run them):
the self-check of docs/ranker-adapter.md, masking of padding, gradient flow into the overrides,
and IDProxy trained through the adapter beating the mean ID on the synthetic cold split."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def check_own_table_override_reproduces_logits(adapter, batch) -> torch.Tensor:
    """``forward(batch, T[item], T[history]) == forward(batch)``; returns the plain logits."""
    with torch.no_grad():
        plain = adapter(batch)
        table = adapter.id_embedding_table()
        overridden = adapter(batch, table[batch.item], table[batch.history])
    torch.testing.assert_close(overridden, plain)
    return plain


def check_overrides_reach_candidate_and_valid_history_only(adapter, batch) -> None:
    torch.manual_seed(0)
    table = adapter.id_embedding_table().detach()
    candidate, history = table[batch.item], table[batch.history]
    with torch.no_grad():
        base = adapter(batch, candidate, history)
        moved_candidate = adapter(batch, candidate + torch.randn_like(candidate), history)
        padding = (batch.history == 0).unsqueeze(-1)
        noise = torch.randn_like(history)
        moved_padding = adapter(batch, candidate, history + noise * padding)
        moved_history = adapter(batch, candidate, history + noise * ~padding)
    has_history = (batch.history > 0).any(dim=1)
    assert has_history.any() and (~has_history).any()
    assert (moved_candidate - base).abs().min() > 0
    torch.testing.assert_close(moved_padding, base)  # padding is masked, whatever it holds
    changed = (moved_history - base).abs() > 1e-7
    assert torch.equal(changed, has_history)


def check_gradients_reach_overrides_not_the_frozen_ranker(adapter, batch) -> None:
    from idproxy_stream.ranker.plugins import freeze

    freeze(adapter)
    table = adapter.id_embedding_table().detach()
    candidate = table[batch.item].clone().requires_grad_(True)
    adapter(batch, candidate, table[batch.history]).sum().backward()
    assert candidate.grad is not None and candidate.grad.abs().sum() > 0
    assert all(p.grad is None for p in adapter.parameters())


def idproxy_and_mean_id_cold_auc(
    tmp_path: Path, adapter_path: str, settings: dict, load: Callable
) -> dict[str, float]:
    """Cold-test AUC through the plugin ranker of the mean mature ID and of IDProxy's proxies.

    Synthetic data exported to the table format; ``train_model_bundle`` (what ``idproxy train``
    runs) trains the ranker through ``adapter_path`` into its checkpoint, then IDProxy Stage 1 +
    2 through it; ``load(checkpoint, vocab)`` reloads the ranker that scores the proxies.
    """
    from tests_helpers import planted_feature_table
    from training.test_bundle import CONFIG

    from idproxy_stream.artifacts import BundleLayout
    from idproxy_stream.config import with_updates
    from idproxy_stream.data.export import export_table_dataset
    from idproxy_stream.data.synthetic import generate_synthetic
    from idproxy_stream.eval.protocol import cold_table
    from idproxy_stream.proxy.registry import load_version
    from idproxy_stream.ranker.inputs import ItemSideFeatures, encode_samples
    from idproxy_stream.ranker.training import evaluate_ranker, table_override
    from idproxy_stream.training.bundle import load_training_data, train_model_bundle
    from idproxy_stream.training.item_features import RowFeatures

    source = generate_synthetic(CONFIG.data.synthetic)
    export = export_table_dataset(source, tmp_path / "tables")
    data = with_updates(
        CONFIG.data,
        name="table",
        path=export.items_path.parent,
        table=with_updates(CONFIG.data.table, user_feature_columns=source.user_feature_columns),
    )
    checkpoint = tmp_path / "ranker-checkpoint"
    ranker = with_updates(
        CONFIG.ranker, adapter=adapter_path, adapter_settings=settings, checkpoint=checkpoint
    )
    config = with_updates(CONFIG, data=data, ranker=ranker)
    features = planted_feature_table(source)
    report = train_model_bundle(config, tmp_path / "bundle", "v1", features=features)
    assert report.metrics["ranker_warm_test_auc"] > 0.6, report.metrics  # the ranker learned

    training = load_training_data(config)
    plugin = load(checkpoint, training.vocab)
    model, _ = load_version(BundleLayout(tmp_path / "bundle").registry)
    rows = RowFeatures.from_table(
        features, training.vocab.item_rows(features.item_ids), training.vocab.num_item_rows
    )
    cold_rows = torch.from_numpy(training.vocab.item_rows(training.split.cold_items))
    with torch.no_grad():
        proxies = model.predict(rows.global_embedding[cold_rows], rows.cluster_states[cold_rows])
    id_table = plugin.id_embedding_table().detach()
    mature = torch.from_numpy(training.vocab.item_rows(training.split.warm_items))
    mean_id = id_table[mature].mean(dim=0, keepdim=True).expand(len(cold_rows), -1)
    side = ItemSideFeatures.from_dataset(training.dataset, training.vocab)
    cold_test = encode_samples(training.split.cold_test, training.dataset, training.vocab, side)
    auc = {
        name: evaluate_ranker(
            plugin, cold_test, table_override(cold_table(id_table, cold_rows, proxies_))
        )["auc"]
        for name, proxies_ in (("idproxy", proxies), ("mean_id", mean_id))
    }
    assert np.isfinite(list(auc.values())).all()
    return auc
