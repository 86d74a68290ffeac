import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from idproxy_stream.encoders.features import (
    CLUSTERS_KEY,
    FINGERPRINT_KEY,
    FeatureTable,
    FeatureTableError,
    read_feature_table,
)
from idproxy_stream.encoders.layers import LayerClusters


def feature_table(item_ids, fingerprint="abc123", width=4, clusters=(0, 2), seed=0):
    generator = np.random.default_rng(seed)
    layer_clusters = LayerClusters(clusters, 5)
    count = len(item_ids)
    return FeatureTable(
        item_ids=np.asarray(item_ids, dtype=np.int64),
        global_embedding=generator.standard_normal((count, width)).astype(np.float32),
        cluster_states=generator.standard_normal(
            (count, layer_clusters.num_clusters, width)
        ).astype(np.float32),
        clusters=layer_clusters,
        encoder_fingerprint=fingerprint,
        image_errors=np.array(
            [None, "image_not_found", *[None] * (count - 2)][:count], dtype=object
        ),
        text_truncated=np.arange(count) % 2 == 0,
    )


def assert_tables_equal(left: FeatureTable, right: FeatureTable) -> None:
    np.testing.assert_array_equal(left.item_ids, right.item_ids)
    np.testing.assert_array_equal(left.global_embedding, right.global_embedding)
    np.testing.assert_array_equal(left.cluster_states, right.cluster_states)
    assert left.clusters == right.clusters
    assert left.encoder_fingerprint == right.encoder_fingerprint
    assert list(left.image_errors) == list(right.image_errors)
    np.testing.assert_array_equal(left.text_truncated, right.text_truncated)


def test_parquet_round_trip_keeps_every_value(tmp_path):
    table = feature_table([5, 3, 9])
    path = table.write_parquet(tmp_path / "features.parquet")
    assert_tables_equal(read_feature_table(path), table)


def test_vectors_are_fixed_size_float32_lists_and_metadata_names_encoder(tmp_path):
    path = feature_table([1, 2]).write_parquet(tmp_path / "f.parquet")
    schema = pq.read_schema(path)
    assert schema.field("global_embedding").type == pa.list_(pa.float32(), 4)
    assert schema.field("cluster_states").type == pa.list_(pa.list_(pa.float32(), 4), 2)
    assert schema.metadata[FINGERPRINT_KEY] == b"abc123"
    assert b'"boundaries": [0, 2]' in schema.metadata[CLUSTERS_KEY]


def test_directory_of_parts_reads_as_one_table(tmp_path):
    feature_table([1, 2], seed=1).write_parquet(tmp_path / "part-a.parquet")
    feature_table([3], seed=2).write_parquet(tmp_path / "part-b.parquet")
    table = read_feature_table(tmp_path)
    assert table.item_ids.tolist() == [1, 2, 3]
    assert table.cluster_states.shape == (3, 2, 4)


def test_parts_of_different_encoders_are_not_mixed(tmp_path):
    feature_table([1, 2], fingerprint="one").write_parquet(tmp_path / "part-a.parquet")
    feature_table([3, 4], fingerprint="two").write_parquet(tmp_path / "part-b.parquet")
    with pytest.raises(FeatureTableError, match="different encoders"):
        read_feature_table(tmp_path)
    with pytest.raises(FeatureTableError, match="not one"):
        read_feature_table(tmp_path / "part-b.parquet", fingerprint="one")


def test_parts_with_different_clusters_are_not_mixed(tmp_path):
    feature_table([1, 2], clusters=(0, 2)).write_parquet(tmp_path / "part-a.parquet")
    feature_table([3, 4], clusters=(0, 3)).write_parquet(tmp_path / "part-b.parquet")
    with pytest.raises(FeatureTableError, match="different layer clusters"):
        read_feature_table(tmp_path)


def test_duplicate_items_keep_their_first_row(tmp_path):
    first = feature_table([1, 2], seed=1)
    first.write_parquet(tmp_path / "part-a.parquet")
    feature_table([2, 3], seed=2).write_parquet(tmp_path / "part-b.parquet")
    table = read_feature_table(tmp_path)
    assert table.item_ids.tolist() == [1, 2, 3]
    np.testing.assert_array_equal(table.global_embedding[1], first.global_embedding[1])


def test_wrong_shapes_are_refused():
    table = feature_table([1, 2])
    with pytest.raises(FeatureTableError, match="cluster_states"):
        FeatureTable(
            item_ids=table.item_ids,
            global_embedding=table.global_embedding,
            cluster_states=table.cluster_states[:, :1],
            clusters=table.clusters,
            encoder_fingerprint="x",
            image_errors=table.image_errors,
            text_truncated=table.text_truncated,
        )


def test_missing_path_and_foreign_parquet_are_clear_errors(tmp_path):
    with pytest.raises(FeatureTableError, match="does not exist"):
        read_feature_table(tmp_path / "nope")
    pq.write_table(pa.table({"item_id": [1]}), tmp_path / "other.parquet")
    with pytest.raises(FeatureTableError, match="fingerprint"):
        read_feature_table(tmp_path / "other.parquet")
