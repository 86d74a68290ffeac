"""Reading a bounded Kafka offset range for a backfill: kafka-python vs Ray Data ``read_kafka``.

Same broker (the embedded tansu), same topic, same records, published by a batching producer
(the default: ``linger_ms`` > 0), which is what makes tansu report partition ends too low:

1. **kafka-python** (``backfill/kafka_range.py: read_range``), given the exact end offsets of
   what was published;
2. **read_kafka, latest**: ``ray.data.read_kafka(end_offset="latest")``;
3. **read_kafka, exact ends**: ``read_kafka`` given the same exact end offsets as (1).

Each row: records read of those published, wall seconds (Ray start-up excluded; the Ray Data
rows include planning and task start), records/s. The backfill uses (1) because it returns
every record; (2) and (3) stop at the ends the broker reports.

    python bench/backfill_read.py                    # ~1 min on 2 cores
    python bench/backfill_read.py --records 50000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

from idproxy_stream.backfill.kafka_range import read_range, resolve_range
from idproxy_stream.config import KafkaConfig
from idproxy_stream.stream.broker import EmbeddedBroker
from idproxy_stream.stream.publish import publish_events
from idproxy_stream.stream.topics import end_offsets, ensure_topics


def timed(read) -> tuple[int, float]:
    started = time.perf_counter()
    count = read()
    return count, time.perf_counter() - started


def run(args: argparse.Namespace) -> dict:
    import ray

    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(
            bootstrap_servers=broker.bootstrap_servers,
            topic=f"backfill-{uuid.uuid4().hex[:6]}",
            fetch_max_wait_ms=10,
            max_poll_records=2_000,
        )
        ensure_topics(kafka, [kafka.topic], args.partitions)
        payloads = [b'{"record": %d, "pad": "%s"}' % (i, b"x" * 200) for i in range(args.records)]
        published = publish_events(kafka, payloads)
        exact = published.end_offsets()
        reported = end_offsets(kafka, kafka.topic)
        offset_range = resolve_range(kafka, kafka.topic, "earliest", exact)

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            logging_level=logging.WARNING,
            _temp_dir=tempfile.mkdtemp(prefix="idp-bench-ray-", dir="/tmp"),
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        try:

            def read_kafka(end):
                return ray.data.read_kafka(
                    kafka.topic,
                    bootstrap_servers=broker.bootstrap_servers,
                    start_offset="earliest",
                    end_offset=end,
                ).count()

            rows = []
            for name, read in (
                (
                    "kafka-python, exact ends",
                    lambda: sum(1 for _ in read_range(kafka, offset_range, 10)),
                ),
                ("read_kafka, latest", lambda: read_kafka("latest")),
                ("read_kafka, exact ends", lambda: read_kafka({kafka.topic: exact})),
            ):
                count, seconds = timed(read)
                rows.append(
                    {
                        "reader": name,
                        "records_read": count,
                        "share_of_published": count / args.records,
                        "seconds": seconds,
                        "records_per_second": count / seconds if seconds else 0.0,
                    }
                )
        finally:
            ray.shutdown()
    return {
        "records_published": args.records,
        "partitions": args.partitions,
        "end_offsets_exact": sum(exact.values()),
        "end_offsets_reported_by_broker": sum(reported.values()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args)
    print(
        f"{result['records_published']} records published (batched) to {result['partitions']} "
        f"partitions; broker-reported end offsets sum to {result['end_offsets_reported_by_broker']}"
    )
    print("| reader | records read | of published | seconds | records/s |")
    print("|---|---:|---:|---:|---:|")
    for row in result["rows"]:
        print(
            f"| {row['reader']} | {row['records_read']:,} | {row['share_of_published']:.3f} | "
            f"{row['seconds']:.2f} | {row['records_per_second']:,.0f} |"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
