"""Writing any :class:`RecDataset` in the generic table format (``idproxy data export``).

So the synthetic generator and the MovieLens loaders produce the same files a user brings, and
everything downstream can run on one path: ``data.name: table``. What is written:

- ``items.<fmt>``: item_id, title, description, tags, categories, year, image_uri, created_at
  (the item's own ``created_at`` when the dataset has one, else its first interaction's time,
  else the log's first time); inline images (the synthetic generator's) are written to
  ``images/<item_id>.png`` and named by ``file://`` URI;
- ``interactions.<fmt>``: user_id, item_id, timestamp, label, rating and the user feature
  columns (each row carries its user's values);
- ``idproxy-data.yaml``: the config sections that load it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import yaml

from idproxy_stream.data.schema import DatasetError, RecDataset
from idproxy_stream.data.table import LIST_SEPARATOR

TableFormat = Literal["parquet", "csv"]
CONFIG_FILE = "idproxy-data.yaml"


@dataclass(frozen=True)
class TableExport:
    """Where an export wrote the tables, and the config that reads them back."""

    items_path: Path
    interactions_path: Path
    config_path: Path
    items: int
    interactions: int
    images: int


def _created_at(dataset: RecDataset) -> pd.Series:
    """(N,) UTC times: the item's ``created_at``, else its first interaction, else the log's."""
    items = dataset.items
    if "created_at" in items.columns:
        return pd.to_datetime(items["created_at"], utc=True)
    log = dataset.interactions
    first = log.groupby("item_id")["timestamp"].min()
    default = int(log["timestamp"].min()) if len(log) else 0
    seconds = items["item_id"].map(first).fillna(default).astype(np.int64)
    return pd.to_datetime(seconds, unit="s", utc=True)


def _image_uris(dataset: RecDataset, image_dir: Path) -> tuple[list[str | None], int]:
    """Each item's image URI; inline bytes are written under ``image_dir`` first."""
    uris: list[str | None] = []
    written = 0
    for item_id, uri, data in zip(
        dataset.items["item_id"],
        dataset.items["image_uri"],
        dataset.items["image_bytes"],
        strict=True,
    ):
        if isinstance(data, bytes | bytearray) and len(data):
            image_dir.mkdir(parents=True, exist_ok=True)
            path = image_dir.resolve() / f"{int(item_id)}.png"
            path.write_bytes(bytes(data))
            uris.append(path.as_uri())
            written += 1
        else:
            uris.append(uri if isinstance(uri, str) else None)
    return uris, written


def _lists_for_csv(column: str, lists: pd.Series) -> list[str]:
    joined = []
    for row, values in enumerate(lists):
        for value in values:
            if LIST_SEPARATOR in str(value):
                raise DatasetError(
                    f"{column} row {row + 1}: {value!r} contains '{LIST_SEPARATOR}', which CSV "
                    "lists use as separator: export as parquet"
                )
        joined.append(LIST_SEPARATOR.join(str(v) for v in values))
    return joined


def _write(frame: pd.DataFrame, path: Path, file_format: TableFormat) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for column in ("tags", "categories"):
        if column in table.column_names and file_format == "parquet":
            position = table.column_names.index(column)
            typed = table.column(column).cast(pa.list_(pa.string()))
            table = table.set_column(position, column, typed)
    if file_format == "parquet":
        pq.write_table(table, path)
    else:
        pa_csv.write_csv(table, path)


def export_table_dataset(
    dataset: RecDataset, output_dir: str | Path, file_format: TableFormat = "parquet"
) -> TableExport:
    """Write ``dataset`` as the table format into ``output_dir`` (see the module docstring)."""
    if file_format not in ("parquet", "csv"):
        raise DatasetError(f"unknown table format {file_format!r}: use parquet or csv")
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    items = dataset.items
    image_uris, images = _image_uris(dataset, output / "images")
    tags, categories = [list(v) for v in items["tags"]], [list(v) for v in items["categories"]]
    items_frame = pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy(np.int64),
            "title": items["title"].astype(str).to_numpy(),
            "description": items["description"].fillna("").astype(str).to_numpy(),
            "tags": tags if file_format == "parquet" else _lists_for_csv("tags", items["tags"]),
            "categories": categories
            if file_format == "parquet"
            else _lists_for_csv("categories", items["categories"]),
            "year": items["year"].to_numpy(np.int64),
            "image_uri": pd.Series(image_uris, dtype=object),
            "created_at": _created_at(dataset).to_numpy(),
        }
    )
    side_columns = list(dataset.metadata.get("side_columns", []))
    for column in side_columns:
        items_frame[column] = items[column].astype(str).to_numpy()
    log = dataset.interactions
    interactions = pd.DataFrame(
        {
            "user_id": log["user_id"].to_numpy(np.int64),
            "item_id": log["item_id"].to_numpy(np.int64),
            "timestamp": log["timestamp"].to_numpy(np.int64),
            "label": log["label"].to_numpy(np.int8),
            "rating": log["rating"].to_numpy(np.float32),
        }
    )
    users = dataset.users.set_index("user_id")
    for column in dataset.user_feature_columns:
        interactions[column] = users[column].astype(str).reindex(interactions["user_id"]).to_numpy()
    items_path = output / f"items.{file_format}"
    interactions_path = output / f"interactions.{file_format}"
    _write(items_frame, items_path, file_format)
    _write(interactions, interactions_path, file_format)
    config_path = output / CONFIG_FILE
    sections: dict = {
        "data": {
            "name": "table",
            "path": str(output.resolve()),
            "table": {
                "items": items_path.name,
                "interactions": interactions_path.name,
                "label_column": "label",
                "side_columns": side_columns,
                "user_feature_columns": list(dataset.user_feature_columns),
            },
        }
    }
    if images:
        sections["encoder"] = {"images": {"allowed_roots": [str((output / "images").resolve())]}}
    config_path.write_text(yaml.safe_dump(sections, sort_keys=False))
    return TableExport(
        items_path, interactions_path, config_path, len(items_frame), len(interactions), images
    )
