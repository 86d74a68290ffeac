"""Ray job entrypoint: extract content features of the configured dataset.

    ray job submit --working-dir . -- python jobs/encode.py --config configs/ml100k.yaml

Runs ``idproxy_stream.encoders.ray_extract.encode_dataset`` (the same function as
``idproxy encode``) on the cluster the job is submitted to.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from idproxy_stream.cluster.entrypoint import job_config, setup_job_logging
from idproxy_stream.encoders.ray_extract import encode_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Extract content features with Ray Data.")
    parser.add_argument("--config", type=Path, required=True, help="YAML config file")
    parser.add_argument("--output", type=Path, default=None, help="feature folder")
    args = parser.parse_args(argv)
    setup_job_logging()
    summary = encode_dataset(job_config(args.config), args.output)
    print(
        json.dumps(
            {
                "output_path": str(summary.output_path),
                "encoder_fingerprint": summary.encoder_fingerprint,
                "items_total": summary.items_total,
                "items_encoded": summary.items_encoded,
                "items_skipped": summary.items_skipped,
                "image_errors": summary.image_errors,
                "seconds": round(summary.seconds, 2),
                "calibration_seconds": round(summary.calibration_seconds, 2),
                "items_per_second": round(summary.items_per_second, 1),
                "steady_items_per_second": round(summary.steady_items_per_second, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
