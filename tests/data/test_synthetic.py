from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError

from idproxy_stream.config import SyntheticDataConfig
from idproxy_stream.data.synthetic import TOPICS, generate_synthetic

TINY = {"num_items": 200, "num_users": 100, "interactions_per_user": 20}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC (ties get average ranks)."""
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    positives = labels == 1
    count_pos, count_neg = positives.sum(), (~positives).sum()
    above = ranks[positives].sum() - count_pos * (count_pos + 1) / 2
    return float(above / (count_pos * count_neg))


def nouns_in(text: str) -> list[str]:
    """Topic nouns (single words) that occur in a text."""
    noun_set = {noun for topic in TOPICS for noun in topic.nouns}
    return [word for word in re.findall(r"[a-z]+", text.lower()) if word in noun_set]


def topic_of_noun() -> dict[str, str]:
    return {noun: topic.name for topic in TOPICS for noun in topic.nouns}


def test_same_config_gives_identical_frames_and_image_bytes():
    first = generate_synthetic(SyntheticDataConfig(**TINY, seed=7))
    second = generate_synthetic(SyntheticDataConfig(**TINY, seed=7))
    pd.testing.assert_frame_equal(first.items, second.items)
    pd.testing.assert_frame_equal(first.users, second.users)
    pd.testing.assert_frame_equal(first.interactions, second.interactions)
    assert first.items["image_bytes"].tolist() == second.items["image_bytes"].tolist()
    np.testing.assert_array_equal(first.metadata["item_factors"], second.metadata["item_factors"])


def test_different_seed_gives_different_data():
    first = generate_synthetic(SyntheticDataConfig(**TINY, seed=1))
    second = generate_synthetic(SyntheticDataConfig(**TINY, seed=2))
    assert (first.items["title"] != second.items["title"]).mean() > 0.5
    assert first.items["image_bytes"].tolist() != second.items["image_bytes"].tolist()
    assert not first.interactions["item_id"].equals(second.interactions["item_id"])


def test_skipping_images_changes_nothing_but_image_bytes():
    with_images = generate_synthetic(SyntheticDataConfig(**TINY, seed=3))
    without = generate_synthetic(SyntheticDataConfig(**TINY, seed=3, with_images=False))
    assert without.items["image_bytes"].isna().all()
    pd.testing.assert_frame_equal(
        with_images.items.drop(columns="image_bytes"), without.items.drop(columns="image_bytes")
    )
    pd.testing.assert_frame_equal(with_images.interactions, without.interactions)
    pd.testing.assert_frame_equal(with_images.users, without.users)


def test_images_decode_as_rgb_of_the_configured_size():
    dataset = generate_synthetic(SyntheticDataConfig(**TINY, image_size=24))
    for data in dataset.items["image_bytes"].iloc[:20]:
        image = Image.open(io.BytesIO(data))
        image.load()
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (24, 24))
    assert dataset.items["image_uri"].isna().all()


def test_tables_have_the_configured_sizes_and_ids():
    for num_items, num_users, per_user in [(40, 10, 5), (3000, 300, 12)]:
        config = SyntheticDataConfig(
            num_items=num_items,
            num_users=num_users,
            interactions_per_user=per_user,
            with_images=False,
        )
        dataset = generate_synthetic(config)
        assert dataset.items["item_id"].tolist() == list(range(1, num_items + 1))
        assert dataset.users["user_id"].tolist() == list(range(1, num_users + 1))
        assert len(dataset.interactions) == num_users * per_user
        assert dataset.metadata["item_factors"].shape == (num_items, config.num_factors)
        assert len(dataset.metadata["interaction_logit"]) == len(dataset.interactions)


def test_each_user_sees_distinct_items_in_increasing_time():
    interactions = generate_synthetic(SyntheticDataConfig(**TINY, with_images=False)).interactions
    per_user = interactions.groupby("user_id")["item_id"].agg(["size", "nunique"])
    assert (per_user["size"] == 20).all() and (per_user["nunique"] == 20).all()
    steps = interactions.groupby("user_id")["timestamp"].diff().dropna()
    assert (steps > 0).all()
    np.testing.assert_array_equal(interactions["rating"], interactions["label"].astype(np.float32))


def test_default_config_covers_warm_cold_and_rare_item_counts():
    dataset = generate_synthetic(SyntheticDataConfig(with_images=False))
    counts = dataset.interactions["item_id"].value_counts()
    counts = counts.reindex(dataset.items["item_id"], fill_value=0)
    assert (counts > 60).sum() >= 150  # warm items
    assert ((counts >= 20) & (counts <= 60)).sum() >= 300  # cold-start candidates
    assert (counts < 20).sum() >= 500  # rare items
    assert 0.4 < dataset.summary()["click_rate"] < 0.7


def test_clicks_follow_the_planted_logistic_model():
    dataset = generate_synthetic(SyntheticDataConfig(with_images=False, seed=5))
    events, meta = dataset.interactions, dataset.metadata
    users = meta["user_factors"][events["user_id"].to_numpy() - 1]
    items = meta["item_factors"][events["item_id"].to_numpy() - 1]
    affinity = (users * items).sum(axis=1)
    expected = (
        meta["click_scale"] * affinity
        + meta["item_bias"][events["item_id"].to_numpy() - 1]
        + meta["click_bias"]
    )
    np.testing.assert_allclose(meta["interaction_logit"], expected, rtol=1e-4, atol=1e-4)
    labels = events["label"].to_numpy()
    assert roc_auc(labels, meta["interaction_logit"]) > 0.75
    assert roc_auc(labels, affinity) > 0.7
    shuffled = np.random.default_rng(0).permutation(affinity)
    assert abs(roc_auc(labels, shuffled) - 0.5) < 0.05


def test_text_uses_the_primary_topic_vocabulary():
    config = SyntheticDataConfig(**TINY, with_images=False, text_noise=0.0)
    dataset = generate_synthetic(config)
    names = dataset.metadata["topic_names"]
    owner = topic_of_noun()
    for row, topic in zip(
        dataset.items.itertuples(), dataset.metadata["item_topic"].tolist(), strict=True
    ):
        nouns = nouns_in(row.title + " " + row.description)
        assert nouns, row
        assert {owner[noun] for noun in nouns} == {names[topic]}
        assert row.categories[0] == names[topic].capitalize()


def test_text_noise_mixes_in_other_topics_but_the_primary_topic_dominates():
    dataset = generate_synthetic(SyntheticDataConfig(**TINY, with_images=False, text_noise=0.3))
    names = dataset.metadata["topic_names"]
    owner = topic_of_noun()
    on_topic = off_topic = 0
    for row, topic in zip(
        dataset.items.itertuples(), dataset.metadata["item_topic"].tolist(), strict=True
    ):
        for noun in nouns_in(row.description):
            on_topic += owner[noun] == names[topic]
            off_topic += owner[noun] != names[topic]
    share = on_topic / (on_topic + off_topic)
    assert 0.6 < share < 0.8  # about 1 - text_noise


def test_topic_vocabularies_do_not_share_words():
    words = [w for topic in TOPICS for w in (*topic.nouns, *topic.adjectives, *topic.verbs)]
    assert len(words) == len(set(words))
    assert len({len(topic.nouns) for topic in TOPICS}) == 1


def test_year_follows_factor_zero():
    dataset = generate_synthetic(SyntheticDataConfig(with_images=False))
    factor = dataset.metadata["item_factors"][:, 0]
    assert np.corrcoef(factor, dataset.items["year"].to_numpy())[0, 1] > 0.8


def test_images_reveal_the_topic_to_a_nearest_centroid_classifier():
    dataset = generate_synthetic(SyntheticDataConfig(num_items=800, num_users=20, seed=4))
    pixels = np.stack(
        [
            np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32).reshape(-1) / 255.0
            for data in dataset.items["image_bytes"]
        ]
    )
    topics = dataset.metadata["item_topic"]
    train, test = np.arange(len(topics)) % 2 == 0, np.arange(len(topics)) % 2 == 1
    present = np.unique(topics[train])
    centroids = np.stack([pixels[train & (topics == t)].mean(axis=0) for t in present])
    distances = ((pixels[test][:, None, :] - centroids[None]) ** 2).sum(axis=2)
    accuracy = (present[distances.argmin(axis=1)] == topics[test]).mean()
    assert accuracy > 3 / len(present)  # chance is 1 / num_topics


def test_user_features_depend_on_preferences():
    dataset = generate_synthetic(SyntheticDataConfig(num_items=200, num_users=2000, seed=6))
    factors = dataset.metadata["user_factors"]
    region = dataset.users["region"].to_numpy()
    names = np.unique(region)
    centroids = np.stack([factors[region == name].mean(axis=0) for name in names])
    predicted = names[((factors[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)]
    assert (predicted == region).mean() > 0.4  # chance is 0.2
    assert set(dataset.users["age"]) == {"<18", "18-24", "25-34", "35-44", "45-54", "55+"}


def test_too_many_interactions_per_user_is_a_config_error():
    with pytest.raises(ValidationError, match="at most num_items // 2"):
        SyntheticDataConfig(num_items=20, num_users=5, interactions_per_user=11)
