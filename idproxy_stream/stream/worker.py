"""The worker: a batch of events -> proxy vectors, with the encoder and the serving ProxyModel.

One :class:`ProxyWorker` runs per worker actor (``num_gpus=1`` each on GPU nodes, a fraction of
a CPU here). Per batch it

1. refuses events for items the ranker already serves from their own ID embedding
   (``reason="item_already_mature"``: at least ``reader.maturity_threshold`` interactions in the
   ID space) — no proxy is computed or written for them;
2. fetches and checks each event's image (``encoders/images.py``: size, pixel count, allowed
   roots ...); a failure is refused with the image error's reason, or with
   ``stream.image_errors: text_only`` the item is encoded from its text alone. Images are
   checked even for text-only encoders, so a bad reference is visible at once;
3. encodes the rest in one call (the text the training used: ``item_content_text`` over
   ``encoder.text_fields``), pools layer states by the model's clusters and runs the ProxyModel:
   ``(B, D_enc), (B, K, D_enc) -> (B, D_id)``. Only these small vectors leave the worker.

**Per-item failures stay per item.** Anything that fails for one event while its input is
prepared (any exception, not only image errors) is that event's refusal; an encoder call that
fails for the batch is bisected — each half encoded again, down to single events — and only the
events that fail alone are refused (``encode_failed``). Neighbours of a bad event are written.

**Hot model swap.** Every ``model_poll_interval_s`` the worker reads the registry's ``LATEST``;
a new version is loaded (fingerprints and content contract checked against this encoder, its
text fields and the ID space; the weights against the SHA-256 its manifest recorded) and used
from the next batch on. A version aligned to another ID space (a retrained ranker: ``idproxy
realign`` swaps the bundle's ID space in before it moves ``LATEST``) brings the bundle's current
ID space with it, mature items included. A damaged version (truncated weights, a broken
manifest) is refused once — logged, counted in ``refused_versions`` and named in every later
batch's ``refused_versions`` (so the source counts it for ``/metrics``) — and never fails a
batch; the current one keeps serving. Each batch carries the version that produced it, so every
stored row names its model. A backfill pins one version instead
(``WorkerSettings.model_version``): it is loaded once and never swapped.

The worker receives :class:`WorkerSettings` (what it reads of the application config), never
the whole config, and changes no process-wide state: its actor's host sets log handlers and
torch threads (``stream/actors.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig, EncoderConfig, FrozenModel
from idproxy_stream.data.schema import item_content_text
from idproxy_stream.encoders.base import ContentItem, build_encoder
from idproxy_stream.encoders.contract import encoder_contract
from idproxy_stream.encoders.images import ImageInputError, load_image
from idproxy_stream.encoders.layers import pool_layer_clusters
from idproxy_stream.events import DeadLetterReason
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.proxy.model import (
    ProxyManifest,
    ProxyModel,
    ProxyModelError,
    read_proxy_manifest,
)
from idproxy_stream.proxy.registry import (
    check_version_name,
    latest_version,
    load_version,
    version_directory,
)
from idproxy_stream.stream.messages import EncodedBatch, ProxyRow, Rejection, WorkItem

logger = logging.getLogger(__name__)


class WorkerSettings(FrozenModel):
    """What one encoder worker reads (built from the application config by :meth:`of`).

    model_version: serve this version and never swap (a backfill); None follows ``LATEST``.
    fallback_version: serve this one when ``LATEST`` cannot be loaded as the worker starts
        (the version the driver loaded at start-up), so a damaged version published while
        the job runs does not stop a replacement worker from starting.
    """

    model_dir: Path
    encoder: EncoderConfig = EncoderConfig()
    maturity_threshold: int = Field(20, ge=1)
    skip_mature_items: bool = True
    image_errors: Literal["dead_letter", "text_only"] = "dead_letter"
    model_poll_interval_s: float = Field(5.0, gt=0)
    model_version: str | None = None
    fallback_version: str | None = None

    @classmethod
    def of(
        cls,
        config: AppConfig,
        model_version: str | None = None,
        fallback_version: str | None = None,
    ) -> WorkerSettings:
        """The worker's part of ``config`` (``stream``, ``encoder``, ``reader`` sections)."""
        return cls(
            model_dir=config.stream.model_dir,
            encoder=config.encoder,
            maturity_threshold=config.reader.maturity_threshold,
            skip_mature_items=config.stream.skip_mature_items,
            image_errors=config.stream.image_errors,
            model_poll_interval_s=config.stream.model_poll_interval_s,
            model_version=model_version,
            fallback_version=fallback_version,
        )


class ProxyWorker:
    """Encoder + ProxyModel for one worker actor. Stateless apart from the loaded models.

    Raises :class:`ProxyModelError` when no version it may serve loads (a pinned version
    missing, or trained for another encoder, text or ID space).

    Example::

        worker = ProxyWorker(WorkerSettings.of(config))   # encoder, ID space, LATEST model
        batch = worker.encode(items)                      # list[WorkItem] -> EncodedBatch
        batch.proxies.shape                               # (len(batch.rows), D_id)
    """

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.encoder = build_encoder(settings.encoder)
        self.content = encoder_contract(self.encoder, settings.encoder.text_fields)
        self.reads_images = bool(getattr(self.encoder, "reads_images", True))
        self.layout = BundleLayout(settings.model_dir)
        self.registry = self.layout.registry
        self._use_id_space(IdSpace.load(self.layout.id_space))
        self.model: ProxyModel | None = None
        self.manifest: ProxyManifest | None = None
        self._refused_version: str | None = None
        self.refused_versions = 0  # versions published while running that failed to load
        self.refused_version_names: set[str] = set()  # reported with each batch
        self._refusal: str | None = None
        self._next_model_check = 0.0
        self._fetch_pool: ThreadPoolExecutor | None = None  # started by the first such batch
        if settings.model_version is not None:
            self._load(check_version_name(settings.model_version))  # raises what it refuses
        else:
            self.check_for_new_model(force=True)
            if self.model is None and settings.fallback_version is not None:
                logger.warning(
                    "LATEST cannot be served (%s): serving version %s, checked at start",
                    self._refusal,
                    settings.fallback_version,
                )
                self._load(check_version_name(settings.fallback_version))
        if self.model is None:
            raise ProxyModelError(
                f"no loadable ProxyModel in {self.registry}: "
                f"{self._refusal or 'train one with `idproxy train`'}"
            )

    @property
    def model_version(self) -> str:
        assert self.manifest is not None
        return self.manifest.version

    def ping(self) -> str:
        return self.model_version

    def refresh_model(self) -> str:
        """Read ``LATEST`` now instead of at the next poll; returns the serving version."""
        self.check_for_new_model(force=True)
        return self.model_version

    def check_for_new_model(self, force: bool = False) -> bool:
        """Load the registry's LATEST if it changed (at most once per poll interval).

        A pinned worker (``settings.model_version``) keeps its version.
        """
        if self.settings.model_version is not None:
            return False
        now = time.monotonic()
        if not force and now < self._next_model_check:
            return False
        self._next_model_check = now + self.settings.model_poll_interval_s
        try:
            version = latest_version(self.registry)
        except (OSError, ProxyModelError) as error:
            logger.warning("cannot read the model registry %s: %s", self.registry, error)
            return False
        if version is None or version == self._refused_version:
            return False
        if self.manifest is not None and version == self.manifest.version:
            return False
        try:
            self._load(version)
        except Exception as error:  # any damage to a new version: refuse it, keep serving
            self._refused_version, self._refusal = version, str(error)
            self.refused_versions += 1
            self.refused_version_names.add(version)
            logger.error(
                "model version %s not loaded, still serving %s: %s",
                version,
                None if self.manifest is None else self.manifest.version,
                error,
                extra={"model_version": version},
            )
            return False
        return True

    def _use_id_space(self, id_space: IdSpace) -> None:
        """Serve against ``id_space``: its fingerprint and its mature items (sorted IDs)."""
        self.id_space_fingerprint = id_space.fingerprint
        mature = id_space.interaction_counts >= self.settings.maturity_threshold
        self.mature_item_ids = np.sort(id_space.item_ids[mature])

    def _id_space_for(self, version: str) -> IdSpace | None:
        """The bundle's ID space when ``version`` was aligned to another one than this worker
        serves (a ranker retrain, ``idproxy realign``, swapped it in before LATEST); else None."""
        wanted = read_proxy_manifest(version_directory(self.registry, version))
        if wanted.id_space_fingerprint == self.id_space_fingerprint:
            return None
        return IdSpace.load(self.layout.id_space)

    def _load(self, version: str) -> None:
        """Load ``version`` and serve it from the next batch on; raises what it refuses."""
        new_id_space = self._id_space_for(version)
        model, manifest = load_version(
            self.registry,
            version,
            expected_encoder_fingerprint=self.encoder.fingerprint,
            expected_id_space_fingerprint=(
                self.id_space_fingerprint if new_id_space is None else new_id_space.fingerprint
            ),
            expected_content=self.content,
        )
        previous = None if self.manifest is None else self.manifest.version
        model.eval()
        if new_id_space is not None:
            self._use_id_space(new_id_space)
        self.model, self.manifest = model, manifest
        logger.info(
            "serving model version %s (was %s)",
            version,
            previous,
            extra={"model_version": version, "previous_version": previous},
        )

    def is_mature(self, item_ids: np.ndarray) -> np.ndarray:
        """(B,) bool: items the ranker serves from their own ID embedding."""
        if self.mature_item_ids.size == 0:
            return np.zeros(len(item_ids), dtype=bool)
        positions = np.searchsorted(self.mature_item_ids, item_ids)
        positions = np.minimum(positions, self.mature_item_ids.size - 1)
        return self.mature_item_ids[positions] == item_ids

    def encode(self, items: Sequence[WorkItem]) -> EncodedBatch:
        """Proxies for a batch: ``B events -> EncodedBatch(rows, (B', D_id) proxies, refusals)``."""
        started = time.perf_counter()
        self.check_for_new_model()
        assert self.model is not None and self.manifest is not None
        manifest = self.manifest
        rejected: list[Rejection] = []
        accepted: list[tuple[WorkItem, ContentItem]] = []
        item_ids = np.array([item.event.item_id for item in items], dtype=np.int64)
        mature = (
            self.is_mature(item_ids)
            if self.settings.skip_mature_items
            else np.zeros(len(items), bool)
        )
        prepared = self._prepare(items, mature)
        for item, is_mature, outcome in zip(items, mature, prepared, strict=True):
            if isinstance(outcome, Exception):  # one event's failure is its dead letter
                error = outcome
                logger.warning("item %d: preparing its input failed: %r", item.event.item_id, error)
                rejected.append(
                    self._rejection(
                        item,
                        DeadLetterReason.ENCODE_FAILED,
                        f"preparing the item's input failed ({type(error).__name__})",
                    )
                )
                continue
            if is_mature:
                rejected.append(
                    self._rejection(
                        item,
                        DeadLetterReason.ITEM_ALREADY_MATURE,
                        f"item {item.event.item_id} has at least "
                        f"{self.settings.maturity_threshold} interactions in the ranker's ID "
                        "space: it is served by its own ID embedding, no proxy is computed",
                    )
                )
                continue
            content, refusal = outcome
            if refusal is not None:
                rejected.append(refusal)
            else:
                accepted.append((item, content))
        rows, vectors, failed = self._proxies(accepted)
        rejected.extend(failed)
        return EncodedBatch(
            rows=tuple(rows),
            proxies=vectors,
            rejected=tuple(rejected),
            model_version=manifest.version,
            encoder_fingerprint=manifest.encoder_fingerprint,
            id_space_fingerprint=manifest.id_space_fingerprint,
            batch_size=len(items),
            encode_seconds=time.perf_counter() - started,
            refused_versions=tuple(sorted(self.refused_version_names)),
        )

    def _prepare(self, items: Sequence[WorkItem], mature: np.ndarray) -> list:
        """Per item: its :meth:`_content` result, the exception it raised, or None (mature).

        A batch's images are read concurrently (``encoder.images.fetch_threads``), so one slow
        server costs the batch one fetch deadline, not one per image."""
        todo = [i for i, is_mature in enumerate(mature) if not is_mature]
        results: list = [None] * len(items)

        def prepare(index: int):
            try:
                return self._content(items[index])
            except Exception as error:  # that item's, reported by the caller
                return error

        with_images = sum(items[i].event.image_reference is not None for i in todo)
        if with_images < 2:
            for index in todo:
                results[index] = prepare(index)
            return results
        if self._fetch_pool is None:
            self._fetch_pool = ThreadPoolExecutor(
                self.settings.encoder.images.fetch_threads, thread_name_prefix="image-fetch"
            )
        for index, outcome in zip(todo, self._fetch_pool.map(prepare, todo), strict=True):
            results[index] = outcome
        return results

    def _content(self, item: WorkItem) -> tuple[ContentItem, Rejection | None]:
        """The encoder input for one event, or its refusal (image failures)."""
        event = item.event
        text = item_content_text(event.model_dump(), self.settings.encoder.text_fields)
        reference = event.image_reference
        if reference is None:
            return ContentItem(text=text), None
        try:
            image = load_image(reference, self.settings.encoder.images)
        except ImageInputError as error:
            if self.settings.image_errors == "dead_letter":
                return ContentItem(text=text), self._rejection(item, error.reason, str(error))
            logger.info("item %d: image ignored (%s), encoding text only", event.item_id, error)
            return ContentItem(text=text), None
        return ContentItem(text=text, image=image if self.reads_images else None), None

    def _proxies(
        self, accepted: list[tuple[WorkItem, ContentItem]]
    ) -> tuple[list[ProxyRow], np.ndarray, list[Rejection]]:
        """Encode + proxy head; on an encoder error, retry one by one and refuse the failures."""
        assert self.model is not None and self.manifest is not None
        width = self.manifest.spec.id_dim
        if not accepted:
            return [], np.zeros((0, width), np.float32), []
        pairs, failures = self._encode_bisecting(accepted)
        rows, vectors = [], []
        for item, vector in pairs:
            if not np.isfinite(vector).all():
                failures.append(
                    self._rejection(
                        item,
                        DeadLetterReason.PROXY_NOT_FINITE,
                        "the model produced NaN or inf for this item",
                    )
                )
                continue
            rows.append(
                ProxyRow(
                    topic=item.topic,
                    partition=item.partition,
                    offset=item.offset,
                    item_id=item.event.item_id,
                    created_at=item.event.created_at,
                )
            )
            vectors.append(vector)
        stacked = (
            np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, width), np.float32)
        )
        return rows, stacked, failures

    def _encode_bisecting(
        self, accepted: list[tuple[WorkItem, ContentItem]]
    ) -> tuple[list[tuple[WorkItem, np.ndarray]], list[Rejection]]:
        """Proxies of ``accepted`` in one call; if it fails, each half again (bisection), so
        only the events that fail alone are refused (``encode_failed``)."""
        try:
            proxies = self._run_model([content for _, content in accepted])
            return [(item, proxies[i]) for i, (item, _) in enumerate(accepted)], []
        except Exception as error:
            if len(accepted) == 1:
                item = accepted[0][0]
                logger.warning("item %d: encoding failed: %r", item.event.item_id, error)
                message = f"encoding failed ({type(error).__name__}: {error})"
                return [], [self._rejection(item, DeadLetterReason.ENCODE_FAILED, message)]
            logger.warning("batch of %d failed (%r); bisecting", len(accepted), error)
        middle = len(accepted) // 2
        first, first_failures = self._encode_bisecting(accepted[:middle])
        second, second_failures = self._encode_bisecting(accepted[middle:])
        return first + second, first_failures + second_failures

    @torch.inference_mode()
    def _run_model(self, contents: list[ContentItem]) -> np.ndarray:
        """``B items -> (B, D_id)`` float32 proxies."""
        assert self.model is not None and self.manifest is not None
        output = self.encoder.encode(contents)
        cluster_states = pool_layer_clusters(output.layer_states, self.manifest.spec.clusters)
        return self.model.predict(output.global_embedding, cluster_states).numpy()

    def _rejection(self, item: WorkItem, reason: DeadLetterReason, message: str) -> Rejection:
        return Rejection(
            partition=item.partition,
            offset=item.offset,
            item_id=item.event.item_id,
            reason=reason,
            message=message,
            stage="worker",
        )
