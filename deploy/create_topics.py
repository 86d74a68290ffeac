"""Create the stream's Kafka topics: input, dead letters and (when configured) output.

    python deploy/create_topics.py --config deploy/idproxy-cluster.yaml \
        --partitions 12 --replication-factor 3 --retention-hours 168 --dead-letter-retention-days 30

Topic names, brokers and security come from the config's ``kafka`` section (SASL secrets from
the environment variables it names). Partitions bound the stream's parallelism: at most one
source per partition (``stream.num_sources``). Dead letters keep their original bytes for
replay, so their topic keeps them longer. A topic that exists is left as it is (adding
partitions moves keys to other partitions, and Kafka cannot remove any): it is reported with
its partition count, and the exit code is 1 when it has fewer than asked for. Prints one JSON
line: the topics created and the partitions of those that existed.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from idproxy_stream.config import KafkaConfig, load_config
from idproxy_stream.stream.clients import make_admin

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.admin import NewTopic

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicPlan:
    """A topic to create: name, partitions, replication and its config (retention ...)."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]


def topic_plans(
    kafka: KafkaConfig,
    partitions: int,
    replication_factor: int,
    retention_hours: float,
    dead_letter_retention_days: float,
) -> list[TopicPlan]:
    """The input, dead-letter and output topics with their retention."""

    def configs(retention_ms: float) -> dict[str, str]:
        return {"retention.ms": str(int(retention_ms)), "cleanup.policy": "delete"}

    stream = configs(retention_hours * HOUR_MS)
    plans = [
        TopicPlan(kafka.topic, partitions, replication_factor, stream),
        TopicPlan(
            kafka.dead_letter_topic,
            partitions,
            replication_factor,
            configs(dead_letter_retention_days * 24 * HOUR_MS),
        ),
    ]
    if kafka.output_topic:
        plans.append(TopicPlan(kafka.output_topic, partitions, replication_factor, stream))
    return plans


def create_topics(kafka: KafkaConfig, plans: list[TopicPlan]) -> dict:
    """Create the planned topics that do not exist; report the partitions of the others.

    Returns ``{"created": [names], "existing": {name: partitions}, "too_few_partitions":
    [names]}``.
    """
    admin = make_admin(kafka)
    try:
        existing = set(admin.list_topics())
        missing = [plan for plan in plans if plan.name not in existing]
        if missing:
            admin.create_topics(
                [
                    NewTopic(
                        plan.name,
                        num_partitions=plan.partitions,
                        replication_factor=plan.replication_factor,
                        topic_configs=plan.configs,
                    )
                    for plan in missing
                ]
            )
        present = [plan.name for plan in plans if plan.name in existing]
        partitions = (
            {topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(present)}
            if present
            else {}
        )
        return {
            "created": [plan.name for plan in missing],
            "existing": partitions,
            "too_few_partitions": [
                plan.name
                for plan in plans
                if partitions.get(plan.name, plan.partitions) < plan.partitions
            ],
        }
    finally:
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create the stream's Kafka topics.")
    parser.add_argument("--config", type=Path, required=True, help="YAML config (kafka section)")
    parser.add_argument(
        "--partitions", type=int, default=None, help="default kafka.topic_partitions"
    )
    parser.add_argument("--replication-factor", type=int, default=3)
    parser.add_argument("--retention-hours", type=float, default=168.0, help="input and output")
    parser.add_argument("--dead-letter-retention-days", type=float, default=30.0)
    args = parser.parse_args(argv)
    kafka = load_config(args.config).kafka
    for name in ("partitions", "replication_factor"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    plans = topic_plans(
        kafka,
        args.partitions or kafka.topic_partitions,
        args.replication_factor,
        args.retention_hours,
        args.dead_letter_retention_days,
    )
    result = create_topics(kafka, plans)
    print(json.dumps(result))
    return 1 if result["too_few_partitions"] else 0


if __name__ == "__main__":
    sys.exit(main())
