"""Ray job entrypoint: the cold-start evaluation, written as a report.

    ray job submit --address http://HEAD:8265 --working-dir . --entrypoint-num-cpus 8 -- \
        python jobs/evaluate.py --config cluster.yaml --output /shared/eval/run1

Runs ``idproxy_stream.eval.run.run_evaluation`` (what ``idproxy eval`` runs): every method and
seed, then ``report.md`` / ``report.json`` / plots in ``--output`` (default ``eval.output_dir``;
on a cluster, shared storage or a folder you fetch afterwards).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from idproxy_stream.cluster.entrypoint import job_config, setup_job_logging
from idproxy_stream.eval.run import run_evaluation
from idproxy_stream.process import set_torch_threads


def seeds(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the cold-start evaluation.")
    parser.add_argument("--config", type=Path, required=True, help="YAML config file")
    parser.add_argument("--output", type=Path, default=None, help="default eval.output_dir")
    parser.add_argument("--seeds", type=seeds, default=None, help="e.g. 0,1,2 (default eval.seeds)")
    parser.add_argument("--title", default="Cold-start evaluation")
    args = parser.parse_args(argv)
    setup_job_logging()
    config = job_config(args.config)
    set_torch_threads(config.ranker.num_threads)
    output = args.output or config.eval.output_dir
    command = "python jobs/evaluate.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = run_evaluation(config, output, command, args.title, args.seeds)
    print(json.dumps({"output": str(output), "gap_closed": report.get("gap_closed_by_idproxy")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
