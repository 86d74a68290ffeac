"""A platform team's path end to end: their data as tables, a DeepCTR-Torch DIN as the ranker,
``idproxy train``, the streaming job on the embedded broker, and Feast's own
``get_online_features`` reading what the stream wrote — then the proxies Feast returns, scored
through that DIN on the cold split, against the mean ID.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from store.test_feast import feast_python, read_with_feast  # noqa: F401 (fixture)
from tests_helpers import TINY_TRAINING, job_test_settings, wait_until

from idproxy_stream.config import config_from_dict
from idproxy_stream.data.export import export_table_dataset
from idproxy_stream.data.synthetic import generate_synthetic
from idproxy_stream.eval.protocol import cold_table
from idproxy_stream.ranker.inputs import ItemSideFeatures, encode_samples
from idproxy_stream.ranker.training import evaluate_ranker, table_override
from idproxy_stream.store.base import build_store
from idproxy_stream.stream.publish import publish_catalogue
from idproxy_stream.stream.topics import ensure_topics, stream_topics
from idproxy_stream.training.bundle import load_training_data, train_model_bundle

pytest.importorskip("deepctr_torch")  # the [deepctr] extra (part of [dev])

from idproxy_stream.ranker.deepctr_din import load_din

DIN_SETTINGS = {
    "embedding_dim": 8,
    "dnn_hidden_units": [16],
    "att_hidden_size": [8],
    "epochs": 4,
    "learning_rate": 1e-2,
}


def test_a_deepctr_din_on_table_data_serves_cold_items_through_the_stream_to_feast(
    tmp_path,
    broker,
    start_job,
    feast_python,  # noqa: F811
):
    source = generate_synthetic(config_from_dict(TINY_TRAINING).data.synthetic)
    tables = export_table_dataset(source, tmp_path / "tables")
    online = tmp_path / "online_store.db"
    raw = job_test_settings(
        broker.bootstrap_servers,
        tmp_path / "model",
        tmp_path / "proxies.sqlite",
        data={
            "name": "table",
            "path": str(tables.items_path.parent),
            "table": {"user_feature_columns": list(source.user_feature_columns)},
        },
        ranker={
            "adapter": "idproxy_stream.ranker.deepctr_din:deepctr_din",
            "adapter_settings": DIN_SETTINGS,
            "checkpoint": str(tmp_path / "din"),
        },
        store={"feast": {"online": "sqlite", "sqlite_path": str(online)}},
    )
    config = config_from_dict(raw, "test settings")
    ensure_topics(config.kafka, stream_topics(config.kafka), config.kafka.topic_partitions)
    train_model_bundle(config, tmp_path / "model", version="v1")  # what `idproxy train` runs

    start_job(config)
    report = publish_catalogue(config, one_record_per_batch=True)  # the items new to the DIN
    training = load_training_data(config)
    cold_ids = [int(i) for i in training.split.cold_items]
    assert set(cold_ids) <= set(report.item_ids)

    def stored() -> int:
        with build_store(config.store) as store:
            return len(store.get(report.item_ids))

    wait_until(lambda: stored() == len(report.item_ids), 240, "a row per published item")

    response = read_with_feast(
        feast_python, tmp_path / "repo", "sqlite", str(online), "int64", cold_ids
    )
    assert set(response["model_version"]) == {"v1"}
    proxies = torch.tensor(np.asarray(response["proxy"], dtype=np.float32))
    din = load_din(tmp_path / "din", training.vocab)
    id_table = din.id_embedding_table().detach()
    assert proxies.shape == (len(cold_ids), id_table.shape[1])
    cold_rows = torch.from_numpy(training.vocab.item_rows(np.asarray(cold_ids)))
    warm_rows = torch.from_numpy(training.vocab.item_rows(training.split.warm_items))
    mean_id = id_table[warm_rows].mean(dim=0, keepdim=True).expand(len(cold_rows), -1)
    side = ItemSideFeatures.from_dataset(training.dataset, training.vocab)
    cold_test = encode_samples(training.split.cold_test, training.dataset, training.vocab, side)
    auc = {
        name: evaluate_ranker(din, cold_test, table_override(cold_table(id_table, cold_rows, p)))[
            "auc"
        ]
        for name, p in (("feast proxies", proxies), ("mean ID", mean_id))
    }
    assert auc["feast proxies"] > auc["mean ID"], auc
