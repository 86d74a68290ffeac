"""``deploy/create_topics.py`` against the embedded broker."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid

import pytest
import yaml

from idproxy_stream.config import KafkaConfig
from idproxy_stream.stream.topics import topic_partitions

from .conftest import REPO


@pytest.fixture(scope="module")
def create_topics():
    spec = importlib.util.spec_from_file_location(
        "create_topics", REPO / "deploy" / "create_topics.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["create_topics"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("create_topics", None)


def test_plans_give_dead_letters_the_longer_retention(create_topics):
    kafka = KafkaConfig(topic="in", dead_letter_topic="in.dlq", output_topic="out")
    plans = {plan.name: plan for plan in create_topics.topic_plans(kafka, 6, 3, 24, 30)}
    assert set(plans) == {"in", "in.dlq", "out"}
    assert plans["in"].configs["retention.ms"] == str(24 * 3_600_000)
    assert plans["in.dlq"].configs["retention.ms"] == str(30 * 24 * 3_600_000)
    assert {(plan.partitions, plan.replication_factor) for plan in plans.values()} == {(6, 3)}
    without_output = create_topics.topic_plans(
        kafka.model_copy(update={"output_topic": None}), 1, 1, 1, 1
    )
    assert [plan.name for plan in without_output] == ["in", "in.dlq"]


def test_script_creates_missing_topics_and_reports_existing_ones(
    create_topics, broker, tmp_path, capsys
):
    suffix = uuid.uuid4().hex[:8]
    kafka = {
        "bootstrap_servers": broker.bootstrap_servers,
        "topic": f"new-{suffix}",
        "dead_letter_topic": f"new-{suffix}.dlq",
        "output_topic": f"out-{suffix}",
    }
    path = tmp_path / "topics.yaml"
    path.write_text(yaml.safe_dump({"kafka": kafka}))
    args = ["--config", str(path), "--partitions", "3", "--replication-factor", "1"]

    assert create_topics.main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert sorted(first["created"]) == sorted(kafka[k] for k in kafka if k != "bootstrap_servers")
    config = KafkaConfig(**kafka)
    assert len(topic_partitions(config, kafka["topic"])) == 3

    assert create_topics.main(args) == 0  # idempotent
    second = json.loads(capsys.readouterr().out)
    assert second["created"] == [] and set(second["existing"].values()) == {3}

    assert create_topics.main([*args[:2], "--partitions", "5", *args[4:]]) == 1
    assert len(json.loads(capsys.readouterr().out)["too_few_partitions"]) == 3
