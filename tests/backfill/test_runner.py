"""``backfill/runner.py``: a version that does not fit the configured content is refused
before any actor starts."""

from __future__ import annotations

import pytest
from tests_helpers import STAGE1_VERSION, new_event, training_config

from idproxy_stream.backfill.runner import BackfillError, run_backfill
from idproxy_stream.stream.messages import WorkItem


def test_a_version_trained_on_other_text_fields_is_refused_before_any_actor_starts(
    staged_bundle,
):
    config = training_config(
        staged_bundle.features_dir,
        stream={"model_dir": str(staged_bundle.model_dir)},
        backfill={"model_version": STAGE1_VERSION},
        encoder={"text_fields": ["title", "tags"]},
        ray={"address": "ray://127.0.0.1:1"},  # nothing listens: reaching Ray would fail otherwise
    )
    work = [WorkItem("t", 0, 0, new_event(50_000))]
    with pytest.raises(BackfillError) as refused:
        run_backfill(config, work, "test")
    message = str(refused.value)
    assert message.startswith(f"cannot backfill with model version {STAGE1_VERSION}")
    assert "encoder.text_fields is ['title', 'categories', 'tags', 'description'] in training" in (
        message
    )
