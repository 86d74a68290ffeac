"""Ray job entrypoint: the streaming job, until ``ray job stop`` (SIGTERM) drains and commits.

    ray job submit --address http://HEAD:8265 --working-dir . \
        --runtime-env-json '{"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "90"}}' \
        -- python jobs/stream.py --config stream.yaml

Runs ``idproxy_stream.stream.pipeline.run_until_stopped`` (what ``idproxy stream`` runs) on
the cluster the job was submitted to. Actor counts and resources come from the config
(``stream.num_sources``, ``stream.num_workers``, ``stream.worker_num_gpus``, ``cluster.*``).
``ray job stop`` sends SIGTERM and kills the job ``RAY_JOB_STOP_WAIT_TIME_S`` seconds later
(3 by default): give it at least ``stream.drain_timeout_s`` so the drain can finish.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from idproxy_stream.cluster.entrypoint import job_config
from idproxy_stream.stream.logs import configure_logging, prepare_ray_logging

logger = logging.getLogger("jobs.stream")
STATUS_EVERY = 10  # log one status line per this many updates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the streaming job until SIGTERM.")
    parser.add_argument("--config", type=Path, required=True, help="YAML config file")
    args = parser.parse_args(argv)
    config = job_config(args.config)
    configure_logging(config.stream.log_level, config.stream.log_format)
    prepare_ray_logging(config.stream.log_format)  # before ray is imported

    from idproxy_stream.stream.pipeline import run_until_stopped
    from idproxy_stream.stream.status import StatusLine

    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        logger.warning("%s: draining and committing", signal.Signals(signum).name)
        stop.set()

    def install_handlers() -> None:  # after ray.init, which installs its own SIGTERM handler
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, request_stop)

    status, updates = StatusLine(), [0]

    def show(stats) -> None:
        updates[0] += 1
        if updates[0] % STATUS_EVERY == 1:
            logger.warning("%s", status.update(stats))

    final = run_until_stopped(config, stop, show, on_started=install_handlers)
    result = {
        "events_in": final.events_in,
        "proxies": final.proxies_total,
        "dead_letters": final.dead_letters_total,
        "committed": {str(p): o for p, o in sorted(final.committed.items())},
    }
    print(json.dumps({"stream_stopped": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
