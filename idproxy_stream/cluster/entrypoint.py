"""Set-up shared by the ``jobs/*.py`` entrypoints that ``ray job submit`` (or KubeRay) runs.

A submitted job's driver runs on a node of an existing cluster, with ``RAY_ADDRESS`` set by
Ray. :func:`job_config` loads the job's YAML config and points ``ray.address`` at that cluster,
so the same config file serves a laptop (local Ray) and a cluster: the package never starts a
second, private Ray inside a cluster job.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from idproxy_stream.config import AppConfig, load_config, with_updates

RAY_ADDRESS_ENV = "RAY_ADDRESS"


def join_submitting_cluster(config: AppConfig, environ: Mapping[str, str]) -> AppConfig:
    """``config`` with ``ray.address`` set to the cluster the job runs on, when it runs on one.

    An explicit ``ray.address`` wins. Local-only settings (``num_cpus``, ``temp_dir``) are
    dropped: Ray refuses them when joining an existing cluster.
    """
    address = environ.get(RAY_ADDRESS_ENV)
    if not address or config.ray.address is not None:
        return config
    ray_section = with_updates(config.ray, address=address, num_cpus=None, temp_dir=None)
    return with_updates(config, ray=ray_section)


def job_config(path: str | Path, environ: Mapping[str, str] | None = None) -> AppConfig:
    """Load a job's config (with ``IDPROXY__*`` overrides) and join the submitting cluster."""
    environ = os.environ if environ is None else environ
    return join_submitting_cluster(load_config(path, environ), environ)


def setup_job_logging(level: str = "INFO") -> None:
    """Plain timestamped logs on stderr: Ray keeps a job's output as its log."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
