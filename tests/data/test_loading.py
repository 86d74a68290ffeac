from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from idproxy_stream.config import DataConfig, SyntheticDataConfig
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.data.schema import DatasetError
from idproxy_stream.data.synthetic import generate_synthetic

TINY = SyntheticDataConfig(num_items=60, num_users=20, interactions_per_user=5, image_size=16)


def test_synthetic_dispatch_uses_the_nested_config():
    dataset = load_dataset(DataConfig(name="synthetic", synthetic=TINY))
    pd.testing.assert_frame_equal(dataset.interactions, generate_synthetic(TINY).interactions)
    assert dataset.num_items == 60


def test_ml100k_dispatch_passes_side_files(ml100k_files):
    config = DataConfig(
        name="ml-100k",
        path=ml100k_files.folder,
        plots_path=ml100k_files.plots,
        plots_check_path=ml100k_files.plots_check,
        posters_path=ml100k_files.posters,
        poster_map_path=ml100k_files.poster_map,
        click_threshold=5.0,
    )
    dataset = load_dataset(config)
    assert dataset.name == "ml-100k"
    assert dataset.interactions["label"].sum() == 1
    assert dataset.summary()["items_with_description"] == 2
    assert dataset.summary()["items_with_image"] == 1


def test_movielens_csv_dispatch_passes_tag_options(csv_files):
    config = DataConfig(
        name="movielens-csv", path=csv_files.folder, tags_max_timestamp=650, max_tags_per_item=1
    )
    assert load_dataset(config).items["tags"].iloc[0] == ["funny"]


def test_ml100k_only_side_files_are_refused_for_the_csv_format(csv_files, tmp_path):
    config = DataConfig(
        name="movielens-csv", path=csv_files.folder, poster_map_path=tmp_path / "map.csv"
    )
    with pytest.raises(DatasetError, match="apply to ml-100k only"):
        load_dataset(config)


def test_movielens_without_a_path_is_a_config_error():
    with pytest.raises(ValidationError, match=r"data\.path is required"):
        DataConfig(name="ml-100k")
