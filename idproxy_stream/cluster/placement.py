"""Where each kind of actor goes on a multi-node Ray cluster (``cluster.*`` config).

Node types advertise custom resources (``ray_cluster.yaml``: ``resources:`` per node type;
KubeRay: ``rayStartParams.resources``); an actor that asks for a little of one can only run on
a node that has it. So sources and sinks ask for ``cpu_node`` and stay off the GPU nodes, and
encoder workers may ask for a resource only one GPU node type offers. CPUs and GPUs themselves
come from the ``num_cpus`` / ``num_gpus`` settings of each job, not from here.

Example::

    options = {"num_cpus": 0.25, **placement(config.cluster, "source")}
    ray.remote(StreamSource).options(**options).remote(...)
"""

from __future__ import annotations

from typing import Any, Literal

from idproxy_stream.config import ClusterConfig

Role = Literal["source", "sink", "worker"]


def placement(cluster: ClusterConfig, role: Role) -> dict[str, Any]:
    """Ray actor options that place an actor of ``role``: ``{"resources": {...}}`` or ``{}``."""
    resources = dict(getattr(cluster, f"{role}_resources"))
    return {"resources": resources} if resources else {}
