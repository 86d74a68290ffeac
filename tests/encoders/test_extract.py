import itertools

import numpy as np
import torch

from idproxy_stream.config import ImageInputConfig, LayerClusterConfig
from idproxy_stream.encoders.base import ContentItem
from idproxy_stream.encoders.extract import content_frame, extract_features
from idproxy_stream.encoders.layers import LayerClusters, pool_layer_clusters

from .conftest import items_frame, png_bytes

TITLES = [
    f"Movie number {index} about {topic}"
    for index, topic in enumerate(
        ["space", "cooking", "music", "war", "love", "robots", "ships", "cats", "dogs", "trains"]
    )
]


def test_features_match_the_encoder_and_keep_the_items_order(minilm):
    items = items_frame(TITLES).iloc[::-1].reset_index(drop=True)
    clusters = LayerClusters((0, 3, 5), minilm.num_layers)
    table = extract_features(minilm, items, clusters=clusters, batch_size=4)
    assert table.item_ids.tolist() == items["item_id"].tolist()
    expected = minilm.encode([ContentItem(text) for text in items["title"]])
    np.testing.assert_allclose(table.global_embedding, expected.global_embedding.numpy(), atol=1e-5)
    np.testing.assert_allclose(
        table.cluster_states,
        pool_layer_clusters(expected.layer_states, clusters).numpy(),
        atol=1e-5,
    )
    assert table.encoder_fingerprint == minilm.fingerprint


def test_without_clusters_they_are_fit_on_a_calibration_sample(minilm):
    items = items_frame(TITLES)
    table = extract_features(
        minilm,
        items,
        batch_size=3,
        layer_config=LayerClusterConfig(num_clusters=3, calibration_size=6),
    )
    assert table.clusters.num_clusters == 3
    assert table.clusters.num_layers == minilm.num_layers
    assert table.cluster_states.shape == (len(TITLES), 3, minilm.hidden_size)
    # Calibration items are reused, not re-encoded differently: all rows agree with a direct pass.
    direct = extract_features(minilm, items, clusters=table.clusters, batch_size=5)
    np.testing.assert_allclose(table.cluster_states, direct.cluster_states, atol=1e-5)


def test_bad_image_item_is_encoded_from_text_and_its_reason_recorded(tiny_internvl, tmp_path):
    (tmp_path / "good.png").write_bytes(png_bytes(seed=1))
    images = [
        f"file://{tmp_path}/good.png",
        f"file://{tmp_path}/missing.png",
        b"not an image",
        None,
    ]
    items = items_frame(TITLES[:4], images)
    config = ImageInputConfig(allowed_roots=(tmp_path,))
    clusters = LayerClusters((0, 2), tiny_internvl.num_layers)
    table = extract_features(tiny_internvl, items, clusters, batch_size=2, image_config=config)
    assert list(table.image_errors) == [None, "image_not_found", "image_undecodable", None]
    text_only = tiny_internvl.encode([ContentItem(TITLES[1])])
    np.testing.assert_allclose(table.global_embedding[1], text_only.global_embedding[0], atol=1e-5)
    with_image = table.global_embedding[0]
    first_text_only = tiny_internvl.encode([ContentItem(TITLES[0])]).global_embedding[0]
    assert not torch.allclose(torch.from_numpy(with_image), first_text_only)


def test_text_encoder_never_reads_images(minilm, tmp_path):
    items = items_frame(TITLES[:2], [f"file://{tmp_path}/missing.png", b"garbage"])
    table = extract_features(minilm, items, LayerClusters((0,), 7), batch_size=2)
    assert list(table.image_errors) == [None, None]


def test_content_frame_builds_text_from_the_configured_fields():
    items = items_frame(["Toy Story"])
    items.loc[0, "description"] = "Toys come alive."
    items.at[0, "categories"] = ["Animation"]
    frame = content_frame(items, ("title", "categories", "description"))
    # Short fields share the first line; the description is a segment of its own line.
    assert frame.loc[0, "text"] == "Toy Story. Genres: Animation\nToys come alive."
    assert content_frame(items, ("title",)).loc[0, "text"] == "Toy Story"


class RecordingEncoder:
    """The real encoder, remembering the texts of each batch it was given."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.batches: list[list[str]] = []
        for name in ("name", "fingerprint", "hidden_size", "num_layers", "reads_images"):
            setattr(self, name, getattr(encoder, name))

    def encode(self, items):
        self.batches.append([item.text for item in items])
        return self.encoder.encode(items)


def test_batches_group_texts_of_similar_length_and_rows_keep_input_order(minilm):
    texts = [("word " * (index * 7 % 10)) + f"item {index}" for index in range(12)]
    recording = RecordingEncoder(minilm)
    table = extract_features(recording, items_frame(texts), LayerClusters((0,), 7), batch_size=4)
    lengths = [sorted(len(text) for text in batch) for batch in recording.batches]
    assert all(left[-1] <= right[0] for left, right in itertools.pairwise(lengths))
    assert table.item_ids.tolist() == list(range(1, 13))
    expected = minilm.encode([ContentItem(text) for text in texts]).global_embedding.numpy()
    np.testing.assert_allclose(table.global_embedding, expected, atol=1e-5)
