"""Run by the Feast virtualenv's Python (tests/store/test_feast.py), never imported by pytest:
apply a feature repo for ``item_proxy`` and print ``get_online_features`` as JSON.

Usage: python feast_readback.py REPO_DIR redis|sqlite CONNECTION int64|string ITEM_ID ...
"""

import json
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Bool, Float32, Int64, String


def main() -> None:
    repo, online, connection, dtype, *item_ids = sys.argv[1:]
    repo = Path(repo)
    repo.mkdir(parents=True, exist_ok=True)
    store_yaml = (
        f'  type: redis\n  connection_string: "{connection}"\n'
        if online == "redis"
        else f"  type: sqlite\n  path: {connection}\n"
    )
    (repo / "feature_store.yaml").write_text(
        "project: idproxy\n"
        f"registry: {repo / 'registry.db'}\n"
        "provider: local\n"
        f"online_store:\n{store_yaml}"
        "entity_key_serialization_version: 3\n"
    )
    source_path = repo / "source.parquet"
    keys = [int(i) for i in item_ids] if dtype == "int64" else list(item_ids)
    pd.DataFrame({"item_id": keys, "event_timestamp": pd.Timestamp.now(tz="UTC")}).to_parquet(
        source_path
    )
    entity = Entity(
        name="item",
        join_keys=["item_id"],
        value_type=ValueType.INT64 if dtype == "int64" else ValueType.STRING,
    )
    view = FeatureView(
        name="item_proxy",
        entities=[entity],
        ttl=timedelta(0),
        schema=[
            Field(name="item_id", dtype=Int64 if dtype == "int64" else String),
            Field(name="proxy", dtype=Array(Float32)),
            Field(name="model_version", dtype=String),
            Field(name="void", dtype=Bool),
            Field(name="neighbour_distance", dtype=Float32),
        ],
        source=FileSource(path=str(source_path), timestamp_field="event_timestamp"),
        online=True,
    )
    store = FeatureStore(repo_path=str(repo))
    store.apply([entity, view])
    response = store.get_online_features(
        features=[
            f"item_proxy:{name}"
            for name in ("proxy", "model_version", "void", "neighbour_distance")
        ],
        entity_rows=[{"item_id": key} for key in keys],
    )
    print(json.dumps(response.to_dict(include_event_timestamps=True), default=str))


if __name__ == "__main__":
    main()
