"""The cold-start split: who is warm or cold, warm-up order, and leak-free histories."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from idproxy_stream.config import SplitConfig
from idproxy_stream.data.schema import DatasetError, RecDataset
from idproxy_stream.data.split import (
    HISTORY_PAD,
    ColdStartSplit,
    behaviour_histories,
    build_cold_start_split,
)


def test_items_are_grouped_by_interaction_count(tiny_dataset, tiny_split):
    counts = tiny_dataset.interactions.groupby("item_id").size()
    config = tiny_split.config
    assert (counts.loc[tiny_split.warm_items] > config.warm_min_interactions).all()
    cold_counts = counts.loc[tiny_split.cold_items]
    assert ((cold_counts >= config.cold_min) & (cold_counts <= config.cold_max)).all()
    assert (counts.loc[tiny_split.rare_items] < config.cold_min).all()
    assert len(tiny_split.warm_items) > 0 and len(tiny_split.cold_items) > 0


def test_no_cold_item_reaches_the_rankers_training_data(tiny_split):
    cold = set(tiny_split.cold_items.tolist())
    for part in ("warm_train", "warm_valid", "warm_test"):
        frame = tiny_split.parts[part]
        assert not set(frame["item_id"]) & cold
        history_items = set(np.concatenate(frame["history"].to_list()).tolist())
        assert not history_items & cold, f"cold items leaked into {part} histories"
        assert set(frame["item_id"]) <= set(tiny_split.warm_items.tolist())


def test_warm_parts_partition_the_warm_items_samples(tiny_dataset, tiny_split):
    warm_log = tiny_dataset.interactions[
        tiny_dataset.interactions["item_id"].isin(tiny_split.warm_items)
    ]
    total = sum(len(tiny_split.parts[p]) for p in ("warm_train", "warm_valid", "warm_test"))
    assert total == len(warm_log)


def test_histories_hold_only_earlier_clicks_of_the_same_user(tiny_dataset, tiny_split):
    log = tiny_dataset.interactions
    clicks = log[log["label"] == 1]
    for part in ("warm_train", "cold_test", "cold_a"):
        frame = tiny_split.parts[part].head(200)
        for row in frame.itertuples():
            history = [item for item in row.history if item != HISTORY_PAD]
            earlier = clicks[
                (clicks["user_id"] == row.user_id) & (clicks["timestamp"] < row.timestamp)
            ]
            assert set(history) <= set(earlier["item_id"]), "history holds a non-earlier click"


def test_history_never_includes_same_second_or_future_clicks():
    interactions = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 1],
            "item_id": [10, 11, 12, 13],
            "timestamp": [100, 200, 200, 300],
            "rating": [5.0, 5.0, 5.0, 5.0],
            "label": [1, 1, 1, 1],
        }
    )
    histories = behaviour_histories(interactions, np.array([10, 11, 12, 13]), history_length=3)
    assert histories.tolist() == [
        [HISTORY_PAD, HISTORY_PAD, HISTORY_PAD],
        [HISTORY_PAD, HISTORY_PAD, 10],
        [HISTORY_PAD, HISTORY_PAD, 10],
        [10, 11, 12],
    ]


def test_warmup_sets_come_first_in_time_and_hold_k_rows_per_cold_item(tiny_split):
    k = tiny_split.config.warmup_size
    stages = [tiny_split.cold_warmup(s) for s in "abc"]
    for stage in stages:
        assert (stage.groupby("item_id").size() == k).all()
        assert set(stage["item_id"]) == set(tiny_split.cold_items.tolist())
    test = tiny_split.cold_test
    for item in tiny_split.cold_items[:20]:
        times = [s.loc[s["item_id"] == item, "timestamp"] for s in [*stages, test]]
        for earlier, later in itertools.pairwise(times):
            assert earlier.max() <= later.min()


def test_split_is_deterministic_and_round_trips(tiny_dataset, tiny_split, tmp_path):
    again = build_cold_start_split(tiny_dataset, tiny_split.config)
    for name, frame in tiny_split.parts.items():
        pd.testing.assert_frame_equal(
            frame.drop(columns="history"), again.parts[name].drop(columns="history")
        )
        assert np.array_equal(np.stack(frame["history"]), np.stack(again.parts[name]["history"]))
    tiny_split.save(tmp_path / "split")
    loaded = ColdStartSplit.load(tmp_path / "split")
    assert loaded.counts() == tiny_split.counts()
    assert np.array_equal(
        np.stack(loaded.cold_test["history"]), np.stack(tiny_split.cold_test["history"])
    )


def test_split_without_cold_items_says_what_to_adjust(tiny_dataset: RecDataset):
    config = SplitConfig(warm_min_interactions=1000, cold_min=500, cold_max=1000, warmup_size=5)
    with pytest.raises(DatasetError, match="warm_min_interactions"):
        build_cold_start_split(tiny_dataset, config)


def test_content_text_puts_short_fields_on_one_line_and_the_description_on_its_own():
    from idproxy_stream.data.schema import item_content_text

    item = {
        "title": "Toy Story (1995)",
        "categories": ["Animation", "Comedy"],
        "tags": [],
        "description": "A cowboy doll\nis threatened.",
    }
    text = item_content_text(item, ("title", "categories", "tags", "description"))
    assert text == "Toy Story (1995). Genres: Animation, Comedy\nA cowboy doll is threatened."
    assert item_content_text({**item, "description": ""}).count("\n") == 0
