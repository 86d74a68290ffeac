"""Checks that run on the driver before any actor starts, so a mistake fails in seconds.

Each one raises an error naming the setting (or file) and what to do: the serving model
version loaded whole (weights, ID space, index, each checked against the SHA-256 its manifest
recorded), client settings
kafka-python would refuse, a broker that does not answer or a topic that is missing, a store
that cannot be opened. (The port of ``/metrics`` is bound, not probed, before the actors start:
``port_in_use`` names its setting.) Without them the same mistakes surface tens of seconds
later, inside an actor, as a library traceback.
"""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig, IndexConfig, KafkaConfig, StoreConfig
from idproxy_stream.errors import IdProxyError
from idproxy_stream.store.base import StoreError, build_store
from idproxy_stream.stream.topics import check_kafka_reachable, stream_topics

logger = logging.getLogger(__name__)


class PortInUseError(IdProxyError, OSError):
    """A port the job would listen on is taken; the message names the setting."""


def port_in_use(port: int, setting: str, host: str, error: OSError) -> PortInUseError:
    """The error for a failed bind of ``host:port`` (set by ``setting``)."""
    if error.errno == errno.EADDRINUSE:
        reason = "is already in use"
    else:
        reason = f"cannot be bound ({error.strerror or error})"
    return PortInUseError(
        f"{setting}: port {port} on {host} {reason}: stop what listens there or choose "
        f"another port with {setting}"
    )


def check_serving_version(model_dir: Path, version: str, index: IndexConfig) -> None:
    """Load what the workers and the sink will load — the ID space, the neighbour index and the
    ProxyModel ``version`` — once in the driver, so a truncated or damaged file fails start-up
    with its name (an ``IdProxyError``) instead of every actor failing in its constructor."""
    from idproxy_stream.index.id_space import IdSpace
    from idproxy_stream.index.void import NeighbourChecker
    from idproxy_stream.proxy.registry import load_version

    started = time.perf_counter()
    layout = BundleLayout(model_dir)
    id_space = IdSpace.load(layout.id_space)
    NeighbourChecker.load(layout.index, id_space, index)
    load_version(layout.registry, version, expected_id_space_fingerprint=id_space.fingerprint)
    logger.debug("model version %s loads (%.2f s)", version, time.perf_counter() - started)


def check_store(config: StoreConfig) -> None:
    """Open and close the configured store(s): a path, a server or credentials that fail."""
    started = time.perf_counter()
    try:
        with build_store(config):
            pass
    except StoreError:
        raise
    except OSError as error:  # sqlite / parquet: a folder that cannot be created or written
        raise StoreError(
            f"cannot open the {config.online} store: {error.strerror or error} "
            f"({getattr(error, 'filename', None) or 'its path'}); choose a writable "
            f"store.{config.online}.path"
        ) from None
    logger.debug("store %s opens (%.2f s)", config.online, time.perf_counter() - started)


def check_kafka(config: KafkaConfig) -> None:
    """The brokers answer and the stream's topics exist (unless ``kafka.ensure_topics``)."""
    topics = () if config.ensure_topics else stream_topics(config)
    check_kafka_reachable(config, topics)


def check_stream_services(config: AppConfig) -> None:
    """What the stream needs besides its model bundle: client settings, Kafka, the store."""
    from idproxy_stream.stream.clients import consumer_settings, producer_settings

    consumer_settings(config.kafka)  # pass-through settings kafka-python would refuse
    producer_settings(config.kafka)
    check_kafka(config.kafka)
    check_store(config.store)
