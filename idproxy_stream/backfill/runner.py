"""The backfill's actor pool: pinned-version workers and one sink, fed batches by the driver.

The driver turns its source (catalogue rows or a Kafka offset range) into batches of
:class:`~idproxy_stream.stream.messages.WorkItem` and keeps at most
``num_workers * batches_in_flight_per_worker`` calls in flight: ``worker.encode`` (round
robin) and, on its result, ``sink.write`` — the same two calls and the same classes as the
stream, so a backfilled row is exactly the row the stream would write for that event with that
model. Records the source could not decode, and events a worker or the sink refused (mature
items, bad images, void proxies with ``index.void_policy: dead_letter``), are counted by reason
in the :class:`BackfillReport`; a backfill does not write dead letters.

Resources come from config: the backfill's worker pool (``backfill.num_workers`` workers with
``worker_num_cpus`` / ``worker_num_gpus`` / ``torch_threads_per_worker`` each, and
``cluster.worker_resources``), its sink ``sink_num_cpus`` and ``cluster.sink_resources``. The
workers are the stream's, pinned to the version (``WorkerSettings.model_version``). Before any
actor starts, the version is checked against the configured encoder and text (the content
contract): a mismatch fails the run with the settings named. A worker or sink that raises
fails the run; rows already written stay and re-running is safe (the store's upsert is
idempotent).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import ray

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.cluster.local_ray import ensure_ray
from idproxy_stream.config import AppConfig
from idproxy_stream.errors import IdProxyError
from idproxy_stream.progress import ProgressLog
from idproxy_stream.proxy.model import ProxyModelError
from idproxy_stream.proxy.registry import check_version_name, latest_version
from idproxy_stream.stream.actors import ActorSpec
from idproxy_stream.stream.messages import BatchOutcome, Rejection, WorkItem
from idproxy_stream.stream.pipeline import (
    absolute_paths,
    bundle_problem,
    worker_pool_spec,
)
from idproxy_stream.stream.pipeline import sink_spec as pool_sink_spec
from idproxy_stream.stream.preflight import check_store

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0


class BackfillError(IdProxyError, RuntimeError):
    """A backfill cannot run or did not finish; the message says what to fix."""


@dataclass
class BackfillReport:
    """What a backfill did.

    records: events (catalogue rows or Kafka records) read from the source.
    rows_written: proxy rows upserted (durable when the run returns).
    statuses: rows by ``ProxyRecord.status`` (``ok``, ``void_flagged``, ``knn_fallback``).
    refused: records without a row, by reason (the dead-letter reason codes of the stream).
    """

    source: str
    model_version: str
    records: int = 0
    rows_written: int = 0
    statuses: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "model_version": self.model_version,
            "records": self.records,
            "rows_written": self.rows_written,
            "statuses": dict(self.statuses),
            "refused": dict(self.refused),
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
        }


def backfill_version(config: AppConfig) -> str:
    """The version to compute with: ``backfill.model_version``, else LATEST right now."""
    if config.backfill.model_version is not None:
        return check_version_name(config.backfill.model_version)
    registry = BundleLayout(config.stream.model_dir).registry
    version = latest_version(registry) if registry.is_dir() else None
    if version is None:
        raise BackfillError(
            f"{registry} has no published model: train one (`idproxy train`) or set "
            "backfill.model_version"
        )
    return version


def worker_spec(config: AppConfig, version: str) -> ActorSpec:
    """One backfill worker: the stream's worker pinned to ``version``, sized by ``backfill.*``."""
    return worker_pool_spec(config, config.backfill.worker_pool(), model_version=version)


def sink_spec(config: AppConfig) -> ActorSpec:
    """The backfill's sink, sized by ``backfill.sink_num_cpus``."""
    return pool_sink_spec(config, config.backfill.sink_num_cpus)


def batches(
    work: Iterable[WorkItem | Rejection], size: int, report: BackfillReport
) -> Iterator[list[WorkItem]]:
    """Batches of ``size`` work items; rejections (undecodable records) are counted instead."""
    batch: list[WorkItem] = []
    for entry in work:
        report.records += 1
        if isinstance(entry, Rejection):
            report.refused[entry.reason] += 1
            continue
        batch.append(entry)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def account(outcome: BatchOutcome, report: BackfillReport, version: str) -> None:
    """Add one sink acknowledgement to the report."""
    if outcome.model_version != version:  # the pinned worker makes this impossible
        raise BackfillError(f"a batch was computed with {outcome.model_version}, not {version}")
    report.rows_written += len(outcome.written)
    report.statuses.update(row.status for row in outcome.written)
    report.refused.update(rejection.reason for rejection in outcome.rejected)


def run_backfill(
    config: AppConfig,
    work: Iterable[WorkItem | Rejection],
    source: str,
    total: int | None = None,
) -> BackfillReport:
    """Compute and write a proxy for every work item with one model version; see module doc.

    ``total``: how many records ``work`` holds, when known (for the progress lines).
    """
    started = time.perf_counter()
    config = absolute_paths(config)
    version = backfill_version(config)
    problem = bundle_problem(config, version)
    if problem is not None:
        raise BackfillError(f"cannot backfill with model version {version}: {problem}")
    check_store(config.store)  # a store that cannot be opened fails before any actor starts
    report = BackfillReport(source=source, model_version=version)
    started_ray = ensure_ray(config.ray)
    backfill = config.backfill
    workers = [worker_spec(config, version).start() for _ in range(backfill.num_workers)]
    sink = sink_spec(config).start()
    try:
        try:
            ray.get([worker.ping.remote() for worker in workers] + [sink.ping.remote()])
        except ray.exceptions.RayActorError as error:
            raise BackfillError(
                f"the backfill actors did not start with model version {version}: {error}"
            ) from error
        logger.info(
            "backfill %s with model %s: %d worker(s)", source, version, backfill.num_workers
        )
        pending: list[ray.ObjectRef] = []
        batch_sizes: list[int] = []  # of the pending batches, oldest first
        limit = backfill.num_workers * backfill.worker_queue_depth
        progress = ProgressLog(logger, f"backfill {source}", total, "records", PROGRESS_EVERY_S)
        for index, batch in enumerate(batches(work, backfill.batch_size, report)):
            while len(pending) >= limit:
                pending = _collect(pending, report, version, wait_for=1)
                progress.advance(batch_sizes.pop(0))
            encoded = workers[index % len(workers)].encode.remote(batch)
            pending.append(sink.write.remote(encoded))
            batch_sizes.append(len(batch))
        while pending:
            pending = _collect(pending, report, version, wait_for=1)
            progress.advance(batch_sizes.pop(0))
        ray.get(sink.close.remote())
    finally:
        for actor in [*workers, sink]:
            ray.kill(actor, no_restart=True)
        if started_ray:
            ray.shutdown()
    report.seconds = time.perf_counter() - started
    logger.info("backfill done: %s", report.to_dict())
    return report


def _collect(
    pending: list[ray.ObjectRef], report: BackfillReport, version: str, wait_for: int
) -> list[ray.ObjectRef]:
    """Wait for ``wait_for`` sink acknowledgements, account them, return the rest."""
    done, rest = ray.wait(pending, num_returns=wait_for)
    for ref in done:
        try:
            outcome = ray.get(ref)
        except (ray.exceptions.RayError, ProxyModelError) as error:
            raise BackfillError(
                f"a batch failed ({error}); rows written so far stay, re-run the backfill "
                "(writes are idempotent)"
            ) from error
        account(outcome, report, version)
    return rest
