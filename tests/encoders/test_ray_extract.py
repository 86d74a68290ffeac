import numpy as np
import pytest

from idproxy_stream.config import (
    AppConfig,
    EncoderConfig,
    ExtractConfig,
    ImageInputConfig,
    InternVLEncoderConfig,
    LayerClusterConfig,
)
from idproxy_stream.encoders.extract import extract_features
from idproxy_stream.encoders.features import read_feature_table
from idproxy_stream.encoders.ray_extract import ExtractError, extract_features_ray

from .conftest import items_frame, png_bytes


def app_config(model_dir, image_root, **internvl) -> AppConfig:
    return AppConfig(
        encoder=EncoderConfig(
            kind="internvl",
            internvl=InternVLEncoderConfig(model=str(model_dir), **internvl),
            images=ImageInputConfig(allowed_roots=(image_root,)),
            layers=LayerClusterConfig(num_clusters=2, calibration_size=6),
        ),
        extract=ExtractConfig(num_workers=2, worker_num_cpus=0.5, batch_size=3),
    )


def test_ray_job_writes_resumable_features_equal_to_in_process(
    ray_local, tiny_internvl, tiny_internvl_dir, tmp_path
):
    (tmp_path / "poster.png").write_bytes(png_bytes(seed=2))
    images = [f"file://{tmp_path}/poster.png", png_bytes(seed=3), b"broken", None] * 2
    items = items_frame([f"Movie {index} about things" for index in range(8)], images)
    config = app_config(tiny_internvl_dir, tmp_path)
    output = tmp_path / "features"

    summary = extract_features_ray(config, items, output)  # fits clusters in a Ray task
    assert (summary.items_total, summary.items_encoded, summary.items_skipped) == (8, 8, 0)
    assert summary.image_errors == {"image_undecodable": 2}
    assert summary.encoder_fingerprint == tiny_internvl.fingerprint
    assert summary.clusters.num_clusters == 2

    written = read_feature_table(output, fingerprint=tiny_internvl.fingerprint)
    expected = extract_features(
        tiny_internvl, items, summary.clusters, batch_size=4, image_config=config.encoder.images
    )
    order = np.argsort(written.item_ids)
    np.testing.assert_array_equal(written.item_ids[order], expected.item_ids)
    np.testing.assert_allclose(
        written.global_embedding[order], expected.global_embedding, atol=1e-5
    )
    np.testing.assert_allclose(written.cluster_states[order], expected.cluster_states, atol=1e-5)
    assert list(written.image_errors[order]) == list(expected.image_errors)

    # Resume: nothing left to do, then only the items of a lost part file are redone.
    again = extract_features_ray(config, items, output)
    assert (again.items_encoded, again.items_skipped) == (0, 8)
    lost_part = sorted(output.glob("part-*.parquet"))[0]
    lost_ids = set(read_feature_table(lost_part).item_ids.tolist())
    lost_part.unlink()
    resumed = extract_features_ray(config, items, output)
    assert resumed.items_encoded == len(lost_ids)
    assert resumed.clusters == summary.clusters
    assert sorted(read_feature_table(output).item_ids.tolist()) == list(range(1, 9))

    # Another encoder setting is another fingerprint: the folder is refused, not mixed.
    other = app_config(tiny_internvl_dir, tmp_path, prompt="A different instruction.")
    with pytest.raises(ExtractError, match="another output path"):
        extract_features_ray(other, items, output)
