"""Ray job entrypoint: recompute proxies with one model version (catalogue or Kafka range).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/backfill.py --config cluster.yaml --source kafka --start earliest \
        --end 0:1200,1:1180 --model-version v20260301

Runs ``idproxy_stream.backfill`` (what ``idproxy backfill`` runs) on the cluster the job was
submitted to: ``backfill.num_workers`` pinned-version workers (``backfill.worker_num_gpus``
each, placed by ``cluster.worker_resources``) and one sink writing to the configured stores.
Prints the report as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from idproxy_stream.backfill.catalogue import backfill_catalogue
from idproxy_stream.backfill.kafka_range import backfill_offset_range, parse_offsets
from idproxy_stream.cluster.entrypoint import job_config, setup_job_logging
from idproxy_stream.config import with_updates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Recompute proxies with one model version.")
    parser.add_argument("--config", type=Path, required=True, help="YAML config file")
    parser.add_argument("--source", choices=("catalogue", "kafka"), default="catalogue")
    parser.add_argument("--model-version", default=None, help="default backfill.model_version")
    parser.add_argument("--topic", default=None, help="kafka: topic (default kafka.topic)")
    parser.add_argument("--start", type=parse_offsets, default="earliest", help="kafka: inclusive")
    parser.add_argument("--end", type=parse_offsets, default="latest", help="kafka: exclusive")
    parser.add_argument("--limit", type=int, default=None, help="catalogue: first N items")
    args = parser.parse_args(argv)
    setup_job_logging()
    config = job_config(args.config)
    if args.model_version is not None:
        section = with_updates(config.backfill, model_version=args.model_version)
        config = with_updates(config, backfill=section)
    if args.source == "catalogue":
        report = backfill_catalogue(config, args.limit)
    else:
        report = backfill_offset_range(config, args.topic, args.start, args.end)
    print(json.dumps({"backfill": report.to_dict()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
