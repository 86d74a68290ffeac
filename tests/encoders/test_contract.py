"""The content contract: every proxy-changing setting, named, recorded by extraction and
refused when it differs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from idproxy_stream.config import EncoderConfig
from idproxy_stream.encoders.contract import (
    ContentContract,
    configured_contract,
    describe_mismatch,
    encoder_contract,
)
from idproxy_stream.encoders.extract import extract_features
from idproxy_stream.encoders.features import FeatureTableError, read_feature_table
from idproxy_stream.encoders.layers import LayerClusters

TRAINED = EncoderConfig(text_fields=("title", "categories", "description"))

# One setting changed at a time -> the key the refusal must name.
CHANGES = [
    ({"text_fields": ("title", "categories")}, "encoder.text_fields"),
    ({"text": {"max_tokens": 64}}, "encoder.text.max_tokens"),
    ({"text": {"segment_pooling": False}}, "encoder.text.segment_pooling"),
    ({"text": {"global_pooling": "cls"}}, "encoder.text.global_pooling"),
    ({"text": {"normalize": False}}, "encoder.text.normalize"),
    ({"kind": "text_image"}, "encoder.kind"),
]


def changed(**update) -> EncoderConfig:
    raw = TRAINED.model_dump()
    for key, value in update.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return EncoderConfig.model_validate(raw)


@pytest.mark.parametrize(("update", "setting"), CHANGES)
def test_each_proxy_changing_setting_is_named_when_it_differs(update, setting):
    trained, serving = configured_contract(TRAINED), configured_contract(changed(**update))
    problem = describe_mismatch(trained, serving)
    assert problem is not None and problem.startswith(setting)
    assert "\n" not in problem  # one line
    assert trained.fingerprint != serving.fingerprint


def test_settings_that_change_only_speed_are_not_in_the_contract():
    fast = EncoderConfig(text_fields=TRAINED.text_fields, text={"batch_size": 8, "device": "cpu"})
    assert describe_mismatch(configured_contract(TRAINED), configured_contract(fast)) is None


def test_a_model_without_a_contract_is_refused_with_what_to_do():
    problem = describe_mismatch(None, configured_contract(TRAINED))
    assert "records no content contract" in problem and "retrain" in problem


def test_the_contract_round_trips_and_tuples_compare_as_lists():
    contract = configured_contract(TRAINED)
    again = ContentContract.from_dict(contract.to_dict())
    assert again == contract and again.fingerprint == contract.fingerprint
    assert again.text_fields == ("title", "categories", "description")


def test_a_built_encoder_serves_the_contract_its_config_names(minilm):
    config = EncoderConfig(text_fields=TRAINED.text_fields)
    assert encoder_contract(minilm, TRAINED.text_fields) == configured_contract(config)


def test_extraction_records_the_contract_and_a_reader_refuses_another(minilm, tmp_path):
    items = pd.DataFrame(
        {
            "item_id": [1, 2],
            "title": ["Toy Story", "Heat"],
            "description": ["Toys come alive.", "A heist."],
            "tags": [[], []],
            "categories": [["Animation"], ["Crime"]],
            "year": [1995, 1995],
            "image_uri": [None, None],
            "image_bytes": [None, None],
        }
    )
    table = extract_features(
        minilm, items, LayerClusters((0, 3), 7), text_fields=TRAINED.text_fields
    )
    path = table.write_parquet(tmp_path / "part-0.parquet")
    read = read_feature_table(path, content=configured_contract(TRAINED))
    assert read.content == configured_contract(TRAINED)
    np.testing.assert_array_equal(read.item_ids, [1, 2])
    serving = configured_contract(EncoderConfig(text_fields=("title", "categories")))
    with pytest.raises(FeatureTableError, match=r"encoder\.text_fields is \['title'"):
        read_feature_table(path, content=serving)
