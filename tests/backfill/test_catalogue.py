"""``backfill/catalogue.py`` and the backfill's version choice (``runner.py``; no Ray needed)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pandas as pd
import pytest
from tests_helpers import STAGE1_VERSION, STAGE2_VERSION

from idproxy_stream.backfill.catalogue import catalogue_label, catalogue_work
from idproxy_stream.backfill.runner import BackfillError, backfill_version
from idproxy_stream.config import config_from_dict
from idproxy_stream.stream.publish import item_event

NOW = datetime(2026, 4, 1, tzinfo=UTC)


def catalogue() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [5, 9, 11],
            "title": ["Five", "Nine", "Eleven"],
            "description": ["a film", "", "another"],
            "categories": [["Drama"], [], ["Comedy", "Crime"]],
            "tags": [[], ["cult"], []],
            "year": [1995, 0, 2001],
            "image_uri": [None, "file:///posters/9.jpg", None],
            "image_bytes": [None, None, b"\x89PNG fake"],
        }
    )


def test_catalogue_rows_become_the_events_publish_would_send():
    items = catalogue()
    work = list(catalogue_work(items, "catalogue:synthetic", NOW))
    assert [(w.topic, w.partition, w.offset) for w in work] == [
        ("catalogue:synthetic", 0, 0),
        ("catalogue:synthetic", 0, 1),
        ("catalogue:synthetic", 0, 2),
    ]
    rows = items.to_dict("records")
    assert work[0].event == item_event(rows[0], NOW, "uri")
    assert work[1].event.image_uri == "file:///posters/9.jpg"  # URIs stay URIs
    assert work[2].event.image_base64 == base64.b64encode(b"\x89PNG fake").decode()
    assert {w.event.created_at for w in work} == {NOW}
    assert catalogue_label(config_from_dict({})) == "catalogue:synthetic"


def test_backfill_uses_the_named_version_or_latest(staged_bundle, tmp_path):
    named = config_from_dict({"backfill": {"model_version": STAGE1_VERSION}})
    assert backfill_version(named) == STAGE1_VERSION
    latest = config_from_dict({"stream": {"model_dir": str(staged_bundle.model_dir)}})
    assert backfill_version(latest) == STAGE2_VERSION
    empty = config_from_dict({"stream": {"model_dir": str(tmp_path)}})
    with pytest.raises(BackfillError, match="no published model"):
        backfill_version(empty)
    with pytest.raises(ValueError, match="not allowed"):
        backfill_version(config_from_dict({"backfill": {"model_version": "../x"}}))
