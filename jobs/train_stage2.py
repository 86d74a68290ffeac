"""Ray job entrypoint: train IDProxy Stage 2 on top of a published Stage-1 version.

    ray job submit --address http://HEAD:8265 --working-dir . --entrypoint-num-cpus 8 -- \
        python jobs/train_stage2.py --config cluster.yaml --stage1-version v1-coarse

Runs ``idproxy_stream.training.jobs.run_stage2``: keeps the Stage-1 projector, trains the
adaptor and gate through the frozen ranker, recalibrates the index and publishes the model as
LATEST in ``--model-dir`` (default ``stream.model_dir``); running streams swap to it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from idproxy_stream.cluster.entrypoint import job_config, setup_job_logging
from idproxy_stream.process import set_torch_threads
from idproxy_stream.training.jobs import run_stage2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train Stage 2 on a Stage-1 model version.")
    parser.add_argument("--config", type=Path, required=True, help="YAML config file")
    parser.add_argument("--model-dir", type=Path, default=None, help="default stream.model_dir")
    parser.add_argument("--stage1-version", default=None, help="default: LATEST")
    parser.add_argument("--version", default=None, help="name of the version to publish")
    args = parser.parse_args(argv)
    setup_job_logging()
    config = job_config(args.config)
    set_torch_threads(config.ranker.num_threads)
    report = run_stage2(
        config, args.model_dir or config.stream.model_dir, args.stage1_version, args.version
    )
    print(json.dumps({"version": report.version, "metrics": report.metrics}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
