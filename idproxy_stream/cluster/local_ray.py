"""Connect to Ray, or start a private local one that listens on loopback only.

``ray.address`` None starts a local Ray for this process: on Ray 2.60 its GCS, raylet, core
workers, dashboard agent and runtime-env agent bind to the node IP Ray picks, and for a Linux
node that is the routable address (their gRPC servers then listen on every interface, ``::``).
A private local Ray needs none of that, so it is started with the loopback node IP, which every
one of those servers binds instead (``tests/cluster/test_local_ray.py`` checks each listening
socket). ``ray.init(_node_ip_address="127.0.0.1")`` cannot do it: Ray replaces a loopback
address given there with the routable one (``services.resolve_ip_for_localhost``); Ray picks
loopback itself only where it believes clusters unsupported (``ray_constants.
ENABLE_RAY_CLUSTER``, off on macOS and Windows), which :func:`_loopback_node_ip` makes it
believe for the one ``ray.init`` call. To let other machines in, start a cluster (``ray start
--head``) and set ``ray.address``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import ray

from idproxy_stream.cluster.reaper import start_reaper
from idproxy_stream.config import RayConfig
from idproxy_stream.errors import IdProxyError

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


class LocalRayError(IdProxyError, RuntimeError):
    """The local Ray did not come up on loopback; nothing was left listening."""


def ensure_ray(config: RayConfig) -> bool:
    """Connect to Ray (``config.address``) or start a local one on loopback; True if started
    here (the caller then calls ``ray.shutdown()``), False if Ray was already initialised."""
    if ray.is_initialized():
        return False
    local = config.address is None
    if local:
        # Ray 2.60 enables token auth by default; a private local cluster does not need it.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with _loopback_node_ip() if local else contextlib.nullcontext():
        ray.init(
            address=config.address,
            num_cpus=config.num_cpus if local else None,
            namespace=config.namespace,
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=False,  # Ray's own messages go through this process's handlers
            _temp_dir=str(config.temp_dir.resolve()) if local and config.temp_dir else None,
        )
    if local:
        node_ip = ray.util.get_node_ip_address()
        if node_ip != LOOPBACK:  # a Ray whose internals moved: fail loudly, never listen wide
            ray.shutdown()
            raise LocalRayError(
                f"the local Ray started on {node_ip}, not {LOOPBACK}: this Ray version picks "
                "its node IP differently; see idproxy_stream/cluster/local_ray.py"
            )
        _reap_with_this_process()
    return True


def _reap_with_this_process() -> None:
    """End every process of the local Ray when this one ends, even by SIGKILL (``reaper.py``:
    Ray's agents outlive a killed driver otherwise)."""
    node = ray._private.worker.global_worker.node
    session_dir = None if node is None else node.get_session_dir_path()
    if not session_dir or not os.path.isdir("/proc"):
        logger.warning("no reaper for the local Ray: its agents may outlive a killed driver")
        return
    start_reaper(session_dir)


@contextlib.contextmanager
def _loopback_node_ip() -> Iterator[None]:
    """While ``ray.init`` starts a node: Ray picks the loopback IP as the node's address."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
