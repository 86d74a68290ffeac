"""Wiring: Ray, the source actors (each with its workers and sink), supervision and metrics.

:class:`StreamJob` is the driver side of ``idproxy stream``. It connects to Ray (or starts a
local one), creates the topics when asked (``kafka.ensure_topics``), starts
``stream.num_sources`` source actors — each creates its own ``stream.num_workers`` worker
actors and one sink actor — and runs a monitor thread that replaces a source actor that died
(its replacement rejoins the consumer group and resumes from the last commit) and keeps the
merged counters fresh for ``/metrics`` and the status line.

The same code runs on a laptop (local Ray, embedded broker, sqlite) and on a cluster
(``ray.address``, a real Kafka, Redis): only the configuration differs. Paths in the config
(model directory, sqlite/parquet paths, image roots) are made absolute on the driver; on a
cluster they must name storage every node sees.

Example::

    job = StreamJob(config).start()
    ...                                   # job.snapshot() for counters
    final = job.stop(drain=True)          # finish in-flight work, commit, shut down
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ray

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.cluster.local_ray import ensure_ray
from idproxy_stream.cluster.placement import placement
from idproxy_stream.config import AppConfig, WorkerPoolConfig, with_updates
from idproxy_stream.encoders.contract import configured_contract, describe_mismatch
from idproxy_stream.encoders.registry import encoder_fingerprint
from idproxy_stream.process import ProcessSetup
from idproxy_stream.proxy.model import ProxyModelError, read_proxy_manifest
from idproxy_stream.proxy.registry import latest_version, version_directory
from idproxy_stream.stream.actors import ActorSpec
from idproxy_stream.stream.dispatch import ActorsCannotStart
from idproxy_stream.stream.driver_watch import DriverWatch
from idproxy_stream.stream.metrics import (
    READY_STALE_AFTER_S,
    StreamStats,
    merge_stats,
    serve_metrics,
)
from idproxy_stream.stream.preflight import (
    check_serving_version,
    check_stream_services,
    port_in_use,
)
from idproxy_stream.stream.sink import ProxySink, SinkSettings
from idproxy_stream.stream.source import SourceSettings, StreamSource
from idproxy_stream.stream.topics import ensure_topics, stream_topics
from idproxy_stream.stream.worker import ProxyWorker, WorkerSettings

logger = logging.getLogger(__name__)

SOURCE_CONCURRENCY = 4  # run() holds one thread; snapshot/stop/handles use the others
SOURCE_RESTART_MIN_S = 10.0  # a replaced source runs at least this long before the next one


def absolute_paths(config: AppConfig) -> AppConfig:
    """``config`` with the paths actors read made absolute (actors may run in another cwd)."""
    store, images = config.store, config.encoder.images
    roots = tuple(Path(root).expanduser().resolve() for root in images.allowed_roots)
    return with_updates(
        config,
        stream=with_updates(config.stream, model_dir=config.stream.model_dir.resolve()),
        store=with_updates(
            store,
            sqlite=with_updates(store.sqlite, path=store.sqlite.path.resolve()),
            parquet=with_updates(store.parquet, path=store.parquet.path.resolve()),
        ),
        encoder=with_updates(config.encoder, images=with_updates(images, allowed_roots=roots)),
    )


def bundle_problem(config: AppConfig, version: str | None = None) -> str | None:
    """Why ``stream.model_dir`` cannot serve ``version`` (LATEST when None) with this config,
    or None when it can.

    Checks that a bundle is there (registry, ID space, index) and that the version was trained
    on the configured encoder and text (fingerprint and content contract, computed without
    loading weights): otherwise every worker would refuse it. One line, naming each setting
    that differs.
    """
    layout = BundleLayout(config.stream.model_dir)
    if version is None:
        version = latest_version(layout.registry) if layout.registry.is_dir() else None
    directory = None if version is None else version_directory(layout.registry, version)
    if directory is None or not layout.id_space.is_dir() or not layout.index.is_dir():
        return (
            f"{layout.root} holds no trained model bundle (registry/LATEST, id_space/, index/): "
            "run `idproxy train --config ...` first, or set stream.model_dir"
        )
    if not directory.is_dir():
        return f"model version {version} is not in {layout.registry}: publish it or name another"
    trained = read_proxy_manifest(directory)
    configured = configured_contract(config.encoder)
    problem = describe_mismatch(trained.content, configured)
    encoder = encoder_fingerprint(config.encoder)
    if trained.encoder_fingerprint != encoder:
        return (
            f"model version {version} in {layout.registry} was trained on encoder "
            f"{trained.encoder_fingerprint}, but the configured encoder is {encoder} "
            f"({problem or 'other weights'}): retrain (`idproxy train`) or configure the "
            "encoder it was trained with"
        )
    if problem is not None:
        return (
            f"model version {version} in {layout.registry} was trained on other content: "
            f"{problem}: configure the settings it was trained with, or retrain"
        )
    return None


def check_model_dir(config: AppConfig) -> str:
    """The serving version; :class:`ProxyModelError` saying what to do when it cannot serve."""
    problem = bundle_problem(config)
    if problem is not None:
        raise ProxyModelError(problem)
    version = latest_version(BundleLayout(config.stream.model_dir).registry)
    check_serving_version(config.stream.model_dir, version, config.index)
    return version


def worker_pool_spec(
    config: AppConfig,
    pool: WorkerPoolConfig,
    model_version: str | None = None,
    fallback_version: str | None = None,
) -> ActorSpec:
    """One encoder worker of ``pool`` (the stream's or the backfill's), placed by ``cluster``.

    ``fallback_version``: the version the driver loaded at start; a worker built while
    ``LATEST`` names a damaged version serves it instead of failing in its constructor.
    """
    options = {
        "num_cpus": pool.worker_num_cpus,
        "num_gpus": pool.worker_num_gpus,
        **placement(config.cluster, "worker"),
    }
    process = ProcessSetup(
        config.stream.log_level, config.stream.log_format, pool.torch_threads_per_worker
    )
    settings = WorkerSettings.of(config, model_version, fallback_version)
    return ActorSpec(ProxyWorker, options, (settings,), process)


def sink_spec(config: AppConfig, num_cpus: float) -> ActorSpec:
    """One sink, placed by ``cluster``."""
    options = {"num_cpus": num_cpus, **placement(config.cluster, "sink")}
    # A sink shares its node with the workers: one faiss thread unless configured.
    faiss_threads = config.index.num_threads or 1
    process = ProcessSetup(config.stream.log_level, config.stream.log_format, None, faiss_threads)
    return ActorSpec(ProxySink, options, (SinkSettings.of(config),), process)


def actor_specs(
    config: AppConfig,
    name: str,
    checked_version: str | None = None,
    driver: DriverWatch | None = None,
) -> ActorSpec:
    """The source actor (with its worker and sink specs) for lane ``name``; workers fall back
    to ``checked_version`` (loaded by the driver at start) when LATEST cannot be loaded; the
    source stops on its own once ``driver`` is gone (``driver_watch.py``)."""
    stream = config.stream
    worker = worker_pool_spec(config, stream.worker_pool(), fallback_version=checked_version)
    sink = sink_spec(config, stream.sink_num_cpus)
    return ActorSpec(
        StreamSource,
        {
            "num_cpus": stream.source_num_cpus,
            "max_concurrency": SOURCE_CONCURRENCY,
            **placement(config.cluster, "source"),
        },
        (SourceSettings(kafka=config.kafka, stream=stream, driver=driver), worker, sink, name),
        ProcessSetup(stream.log_level, stream.log_format),
    )


class _SourceRun:
    """A source actor and the ref of its running ``run()``."""

    def __init__(self, spec: ActorSpec, name: str) -> None:
        self.spec = spec
        self.name = name
        self.started = time.monotonic()
        self.handle = spec.start()
        self.run_ref = self.handle.run.remote()
        self.last_stats: StreamStats | None = None


class StreamJob:
    """The streaming job's driver: start, supervise, snapshot, stop."""

    def __init__(self, config: AppConfig, name: str = "stream") -> None:
        self.config = absolute_paths(config)
        self.name = name
        self.sources: list[_SourceRun] = []
        self.restarts = 0
        self._retired: list[StreamStats] = []
        self._latest = StreamStats()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None
        self._metrics_server = None
        self._started_ray = False
        # Why the job must stop (an actor that cannot start), or None; run_until_stopped
        # raises it as ActorsCannotStart once the job has stopped.
        self.fatal: str | None = None

    def start(self) -> StreamJob:
        """Check bundle, settings, Kafka, store and port; start Ray, topics, actors, monitor.

        Everything a user can get wrong is checked before the first actor starts (seconds),
        each failure an :class:`~idproxy_stream.errors.IdProxyError` naming the setting.
        """
        version = check_model_dir(self.config)
        check_stream_services(self.config)
        self._serve_metrics()  # binds the port before any actor starts
        try:
            self._started_ray = ensure_ray(self.config.ray)
            kafka = self.config.kafka
            if kafka.ensure_topics:
                ensure_topics(kafka, stream_topics(kafka), kafka.topic_partitions)
            driver = DriverWatch.of_this_process()
            for index in range(self.config.stream.num_sources):
                name = f"{self.name}-source-{index}"
                spec = actor_specs(self.config, name, checked_version=version, driver=driver)
                self.sources.append(_SourceRun(spec, name))
        except BaseException:
            self._stop_metrics()
            raise
        logger.info(
            "stream %s started: %d source(s) x %d worker(s), model %s, topic %s",
            self.name,
            len(self.sources),
            self.config.stream.num_workers,
            version,
            kafka.topic,
        )
        self._monitor = threading.Thread(
            target=self._watch, name=f"{self.name}-monitor", daemon=True
        )
        self._monitor.start()
        return self

    def _serve_metrics(self) -> None:
        stream = self.config.stream
        if stream.metrics_port is None:
            return
        try:
            self._metrics_server = serve_metrics(
                stream.metrics_port,
                self.snapshot,
                stream.metrics_host,
                stale_after_s=max(READY_STALE_AFTER_S, 3 * stream.status_interval_s),
            )
        except OSError as error:
            raise port_in_use(
                stream.metrics_port, "stream.metrics_port", stream.metrics_host, error
            ) from None
        logger.info(
            "metrics on http://%s:%d/metrics (probes /healthz, /readyz)",
            stream.metrics_host,
            self._metrics_server.port,
        )

    def _stop_metrics(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None

    # -------------------------------------------------------------------------- monitor

    def _watch(self) -> None:
        interval = max(0.2, self.config.stream.status_interval_s / 2)
        while not self._stopping.wait(interval):
            try:
                self.supervise()
                self.refresh()
            except Exception:  # the monitor must outlive any one bad call
                logger.exception("stream monitor")

    def supervise(self) -> int:
        """Replace source actors whose ``run()`` ended unexpectedly; returns how many."""
        replaced = 0
        for index, source in enumerate(list(self.sources)):
            ready, _ = ray.wait([source.run_ref], timeout=0)
            if not ready or self._stopping.is_set():
                continue
            if time.monotonic() - source.started < SOURCE_RESTART_MIN_S:
                continue  # a source that keeps failing (broker down) is retried slowly
            try:
                ray.get(source.run_ref)
                reason = "returned without being stopped"
            except ray.exceptions.RayError as error:
                cause = getattr(error, "cause", None)
                if isinstance(cause, ActorsCannotStart):  # rebuilding it would loop forever
                    self.fatal = str(cause)
                    logger.error("%s ended: %s: stopping the job", source.name, self.fatal)
                    continue
                reason = f"{type(error).__name__}: {error}"
            logger.error("%s ended (%s): starting a new one", source.name, reason)
            if source.last_stats is not None:  # its totals stay; its gauges end with it
                self._retired.append(source.last_stats.retired())
            try:
                ray.kill(source.handle, no_restart=True)
            except Exception as error:
                logger.debug("killing %s: %s", source.name, error)
            self.sources[index] = _SourceRun(source.spec, source.name)
            self.restarts += 1
            replaced += 1
        return replaced

    def refresh(self, timeout_s: float = 5.0) -> StreamStats:
        """Fetch every source's counters and merge them (with those of replaced sources)."""
        snapshots = []
        for source in self.sources:
            try:
                source.last_stats = ray.get(source.handle.snapshot.remote(), timeout=timeout_s)
            except (ray.exceptions.RayError, TimeoutError) as error:
                logger.debug("no snapshot from %s: %s", source.name, error)
            if source.last_stats is not None:
                snapshots.append(source.last_stats)
        merged = merge_stats([*self._retired, *snapshots])
        merged.restarts["source"] = self.restarts
        with self._lock:
            self._latest = merged
        return merged

    def snapshot(self) -> StreamStats:
        """The latest merged counters (refreshed by the monitor thread)."""
        with self._lock:
            return self._latest

    def wait_ready(self, timeout_s: float = 300.0) -> StreamStats:
        """Block until every worker and sink has loaded and every source holds partitions."""
        deadline = time.monotonic() + timeout_s
        for lane in self.handles():
            pings = [worker.ping.remote() for worker in lane["workers"]] + [
                lane["sink"].ping.remote()
            ]
            ray.get(pings, timeout=max(1.0, deadline - time.monotonic()))
        while True:
            stats = self.refresh()
            if all(source.last_stats and source.last_stats.assigned for source in self.sources):
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {self.name}: no partitions assigned in {timeout_s} s")
            time.sleep(0.1)

    def handles(self) -> list[dict]:
        """Per source: ``{"source": handle, "workers": [...], "sink": handle}``."""
        result = []
        for source in self.sources:
            actors = ray.get(source.handle.handles.remote(), timeout=30)
            result.append({"source": source.handle, **actors})
        return result

    # ----------------------------------------------------------------------------- stop

    def stop(self, drain: bool = True, timeout_s: float | None = None) -> StreamStats:
        """Stop every source (draining in-flight work and committing when ``drain``)."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join(timeout=30)
        timeout_s = timeout_s or self.config.stream.drain_timeout_s + 60
        for source in self.sources:
            try:
                source.handle.stop.remote(drain)
            except ray.exceptions.RayError as error:
                logger.warning("stopping %s: %s", source.name, error)
        finals = []
        for source in self.sources:
            try:
                finals.append(ray.get(source.run_ref, timeout=timeout_s))
            except (ray.exceptions.RayError, TimeoutError) as error:
                logger.warning("%s did not stop cleanly: %s", source.name, error)
                if source.last_stats is not None:
                    finals.append(source.last_stats)
            try:
                ray.kill(source.handle, no_restart=True)
            except Exception as error:
                logger.debug("killing %s: %s", source.name, error)
        merged = merge_stats([*self._retired, *finals])
        merged.restarts["source"] = self.restarts
        with self._lock:
            self._latest = merged
        self._stop_metrics()
        if self._started_ray:
            ray.shutdown()
        logger.info("stream %s stopped", self.name)
        return merged


def run_until_stopped(
    config: AppConfig,
    stop: threading.Event,
    on_status: Callable[[StreamStats], None] | None = None,
    name: str = "stream",
    on_started: Callable[[], None] | None = None,
) -> StreamStats:
    """Run a :class:`StreamJob` until ``stop`` is set, then drain, commit and shut down.

    ``on_started`` runs once the job is up — the place to install signal handlers, since
    ``ray.init`` replaces the process's SIGTERM handler with its own. ``on_status`` gets the
    merged counters every ``stream.status_interval_s``.
    """
    job = StreamJob(config, name).start()
    try:
        if on_started is not None:
            on_started()
        while not stop.wait(config.stream.status_interval_s) and job.fatal is None:
            if on_status is not None:
                on_status(job.snapshot())
    finally:
        final = job.stop(drain=True)
    if job.fatal is not None:
        raise ActorsCannotStart(job.fatal)
    return final
