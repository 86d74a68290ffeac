"""Ray job entrypoint: train the ranker (if the bundle has none) and IDProxy Stage 1.

    ray job submit --address http://HEAD:8265 --working-dir . --entrypoint-num-cpus 8 -- \
        python jobs/train_stage1.py --config cluster.yaml

Runs ``idproxy_stream.training.jobs.run_stage1``: publishes a Stage-1-only ProxyModel (gate
closed) with the ID space and index into ``--model-dir`` (default ``stream.model_dir``, which on
a cluster is shared storage). Reads the features ``jobs/encode.py`` wrote to
``extract.output_path`` when they are there. Training runs in this driver process: place it with
``--entrypoint-num-cpus`` / ``--entrypoint-resources``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from idproxy_stream.cluster.entrypoint import job_config, setup_job_logging
from idproxy_stream.process import set_torch_threads
from idproxy_stream.training.jobs import run_stage1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the ranker (if absent) and Stage 1.")
    parser.add_argument("--config", type=Path, required=True, help="YAML config file")
    parser.add_argument("--model-dir", type=Path, default=None, help="default stream.model_dir")
    parser.add_argument("--version", default=None, help="ProxyModel version name")
    args = parser.parse_args(argv)
    setup_job_logging()
    config = job_config(args.config)
    set_torch_threads(config.ranker.num_threads)
    report = run_stage1(config, args.model_dir or config.stream.model_dir, args.version)
    print(json.dumps({"version": report.version, "metrics": report.metrics}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
