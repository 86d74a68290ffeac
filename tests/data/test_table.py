"""The generic table format: a synthetic dataset round-trips through it (Parquet and CSV) and
every malformed input is refused in one line that names the file, the column and the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from idproxy_stream.config import DataConfig, SplitConfig, SyntheticDataConfig, TableDataConfig
from idproxy_stream.data.export import export_table_dataset
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.data.schema import DatasetError
from idproxy_stream.data.split import build_cold_start_split
from idproxy_stream.data.synthetic import generate_synthetic

TINY = SyntheticDataConfig(num_items=80, num_users=40, interactions_per_user=10, image_size=16)
SPLIT = SplitConfig(warm_min_interactions=8, cold_min=4, cold_max=8, warmup_size=1)
USER_FEATURES = ("age", "region")


def table_config(folder: Path, suffix: str = "parquet", **changes) -> DataConfig:
    table = TableDataConfig(
        items=Path(f"items.{suffix}"),
        interactions=Path(f"interactions.{suffix}"),
        user_feature_columns=USER_FEATURES,
        **changes,
    )
    return DataConfig(name="table", path=folder, table=table)


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_synthetic_dataset_round_trips_through_the_table_format(tmp_path, file_format):
    original = generate_synthetic(TINY)
    report = export_table_dataset(original, tmp_path, file_format)
    assert report.images == TINY.num_items  # inline PNGs became files named by URI
    loaded = load_dataset(table_config(tmp_path, file_format))

    pd.testing.assert_frame_equal(
        loaded.interactions, original.interactions, check_dtype=False, check_exact=True
    )
    for column in ("item_id", "title", "description", "year"):
        assert loaded.items[column].tolist() == original.items[column].tolist(), column
    assert (
        loaded.items["categories"].map(list).tolist()
        == original.items["categories"].map(list).tolist()
    )
    first_uri = loaded.items["image_uri"].iloc[0]
    assert (
        Path(first_uri.removeprefix("file://")).read_bytes()
        == original.items["image_bytes"].iloc[0]
    )
    users = loaded.users.set_index("user_id")
    expected = original.users.set_index("user_id")
    for column in USER_FEATURES:
        assert users[column].to_dict() == expected[column].astype(str).to_dict()

    # one path through the system: the split of the exported tables is the original's split
    assert build_cold_start_split(loaded, SPLIT).counts() == (
        build_cold_start_split(original, SPLIT).counts()
    )


def test_rating_labels_use_the_click_threshold(tmp_path):
    export_table_dataset(generate_synthetic(TINY), tmp_path)
    frame = pq.read_table(tmp_path / "interactions.parquet").to_pandas()
    frame["rating"] = np.where(frame["label"] == 1, 4.5, 2.0)
    pq.write_table(pa.Table.from_pandas(frame.drop(columns="label")), tmp_path / "r.parquet")
    config = DataConfig(
        name="table",
        path=tmp_path,
        click_threshold=4.0,
        table=TableDataConfig(interactions=Path("r.parquet"), label_column="rating"),
    )
    loaded = load_dataset(config)
    assert loaded.interactions["label"].sum() == frame["label"].sum()
    assert set(loaded.interactions["rating"]) == {2.0, 4.5}


def write_csv(folder: Path, items: str, interactions: str) -> DataConfig:
    (folder / "items.csv").write_text(items)
    (folder / "interactions.csv").write_text(interactions)
    return DataConfig(
        name="table",
        path=folder,
        table=TableDataConfig(items=Path("items.csv"), interactions=Path("interactions.csv")),
    )


GOOD_ITEMS = "item_id,title,created_at\n1,A,2026-01-01T00:00:00Z\n2,B,1767225600\n"
GOOD_EVENTS = "user_id,item_id,timestamp,label\n7,1,100,1\n7,2,90,0\n"


def test_valid_csv_tables_load_with_mixed_time_spellings(tmp_path):
    dataset = load_dataset(write_csv(tmp_path, GOOD_ITEMS, GOOD_EVENTS))
    assert dataset.items["created_at"].tolist() == [
        pd.Timestamp("2026-01-01", tz="UTC"),
        pd.Timestamp(1767225600, unit="s", tz="UTC"),
    ]
    # timestamps out of order are fine: the log is sorted by (user, time)
    assert dataset.interactions["timestamp"].tolist() == [90, 100]
    assert dataset.items["tags"].tolist() == [[], []]


@pytest.mark.parametrize(
    ("items", "interactions", "message"),
    [
        (
            "item_id,created_at\n1,5\n",
            GOOD_EVENTS,
            "items.csv: column 'title': missing (the file has: item_id, created_at); add it",
        ),
        (
            "item_id,title,created_at\n1,A,5\nx,B,5\n",
            GOOD_EVENTS,
            "items.csv: column 'item_id' row 2: 'x' is not an integer",
        ),
        (
            "item_id,title,created_at\n1,A,5\n2,B,5\n1,C,5\n",
            GOOD_EVENTS,
            "items.csv: column 'item_id' row 3: duplicate item id 1 (first at row 1)",
        ),
        (
            "item_id,title,created_at\n1,A,5\n2,B,yesterday\n",
            GOOD_EVENTS,
            "items.csv: column 'created_at' row 2: 'yesterday' is not an ISO-8601 time",
        ),
        (
            GOOD_ITEMS,
            "user_id,item_id,timestamp,label\n7,1,100,1\n7,2,90,3\n",
            "interactions.csv: column 'label' row 2: label 3 is not 0 or 1",
        ),
        (
            GOOD_ITEMS,
            "user_id,item_id,timestamp,label\n7,1,100,1\n7,9,90,0\n8,9,91,0\n",
            "interactions.csv: column 'item_id' row 2: item 9 is not in the items table "
            "(2 such rows)",
        ),
        (
            GOOD_ITEMS,
            "user_id,item_id,timestamp,label\n7,1,100,1\n,2,90,0\n",
            "interactions.csv: column 'user_id' row 2: empty value",
        ),
        (
            GOOD_ITEMS,
            "user_id,item_id,label\n7,1,1\n",
            "interactions.csv: column 'timestamp': missing",
        ),
    ],
)
def test_bad_tables_fail_in_one_line_naming_file_column_and_row(
    tmp_path, items, interactions, message
):
    with pytest.raises(DatasetError) as raised:
        load_dataset(write_csv(tmp_path, items, interactions))
    text = str(raised.value)
    assert "\n" not in text
    assert message in text, text


def test_wrong_parquet_dtype_names_the_column(tmp_path):
    pq.write_table(
        pa.table({"item_id": [1.5, 2.0], "title": ["a", "b"], "created_at": [1, 2]}),
        tmp_path / "items.parquet",
    )
    (tmp_path / "interactions.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match=r"items.parquet: column 'item_id' row 1: 1.5 is not"):
        load_dataset(DataConfig(name="table", path=tmp_path))


def test_unreadable_file_and_missing_file_name_the_setting(tmp_path):
    (tmp_path / "items.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match=r"items.parquet: not a readable parquet table"):
        load_dataset(DataConfig(name="table", path=tmp_path))
    with pytest.raises(DatasetError, match=r"data.table.items = .*nothing.csv does not exist"):
        load_dataset(
            DataConfig(
                name="table", path=tmp_path, table=TableDataConfig(items=Path("nothing.csv"))
            )
        )
