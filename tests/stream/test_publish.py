"""Catalogue items as NewItemEvents: image modes, new-items filter, publishing to a topic."""

from __future__ import annotations

import base64
from pathlib import Path

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import SyntheticDataConfig
from idproxy_stream.data.synthetic import generate_synthetic
from idproxy_stream.events import decode_new_item_event
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.stream.publish import catalogue_events, new_items, publish_events
from idproxy_stream.stream.topics import read_topic


def synthetic_items(count: int = 12):
    config = SyntheticDataConfig(num_items=count, num_users=4, interactions_per_user=2)
    return generate_synthetic(config).items


def test_inline_images_carry_the_catalogue_bytes() -> None:
    items = synthetic_items()
    events = list(catalogue_events(items, image_mode="inline"))
    assert [e.item_id for e in events] == items["item_id"].tolist()
    assert base64.b64decode(events[0].image_base64) == items["image_bytes"].iloc[0]
    assert events[0].title == items["title"].iloc[0] and events[0].image_uri is None


def test_uri_images_are_written_to_files_the_event_points_at(tmp_path: Path) -> None:
    items = synthetic_items()
    events = list(catalogue_events(items, image_mode="uri", image_dir=tmp_path / "img"))
    path = Path(events[3].image_uri.removeprefix("file://"))
    assert path.read_bytes() == items["image_bytes"].iloc[3]
    assert all(e.image_base64 is None for e in events)
    assert all(e.image_uri is None for e in catalogue_events(items, image_mode="none"))


def test_a_catalogue_row_with_its_own_created_at_keeps_it(tmp_path: Path) -> None:
    from idproxy_stream.config import DataConfig
    from idproxy_stream.data.export import export_table_dataset
    from idproxy_stream.data.loading import load_dataset

    source = generate_synthetic(
        SyntheticDataConfig(num_items=12, num_users=4, interactions_per_user=2)
    )
    export_table_dataset(source, tmp_path)
    items = load_dataset(DataConfig(name="table", path=tmp_path)).items
    events = list(catalogue_events(items, image_mode="none"))
    assert [e.created_at for e in events] == items["created_at"].tolist()
    without = list(catalogue_events(source.items, image_mode="none"))
    assert without[0].created_at > items["created_at"].max()  # stamped when built


def test_only_items_outside_the_id_space_are_new(bundle) -> None:
    from tests.stream.conftest import TINY_TRAINING

    items = generate_synthetic(SyntheticDataConfig(**TINY_TRAINING["data"]["synthetic"])).items
    known = set(IdSpace.load(BundleLayout(bundle.model_dir).id_space).item_ids.tolist())
    fresh = new_items(items, bundle.model_dir)
    assert set(fresh["item_id"]) == set(items["item_id"]) - known and len(fresh) > 0


def test_published_events_arrive_keyed_by_item_id(stream_config) -> None:
    config = stream_config()
    events = list(catalogue_events(synthetic_items(), image_mode="none"))
    report = publish_events(config.kafka, events)
    assert report.events == len(events) and report.item_ids == [e.item_id for e in events]
    records = read_topic(config.kafka, config.kafka.topic)
    assert sorted((p, o) for p, o, _, _ in records) == sorted(report.positions)
    decoded = {
        int(key): decode_new_item_event(value, 100_000, 10_000) for _, _, key, value in records
    }
    assert decoded == {e.item_id: e for e in events}
