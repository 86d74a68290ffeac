"""What a ranker reads for an item: its learned ID, its proxy, or a fallback (switch-over).

Policy, per item (``ReaderConfig``):

1. ``"id"`` — the item has a row in the ranker's ID table (:class:`IdSpace`) and at least
   ``maturity_threshold`` interactions. The count is ``live_counts[item]`` when the caller
   passes a live mapping that holds the item, else the ID space's training count.
2. ``"proxy"`` — otherwise, the item's proxy from the feature store: of
   ``serving_model_version``, or the newest version when that is None. A proxy built for a
   different ID space (fingerprint) or dimension is ignored (logged), since it does not live in
   this ranker's space.
3. ``"fallback"`` — otherwise the mean raw ID embedding of the mature items
   (``fallback="mean_id"``; zeros if no item is mature) or zeros (``fallback="zeros"``).

Given the manifests of the models it may serve (``manifests``, e.g. :func:`serving_manifests`
of the bundle's registry), the reader also checks each proxy against its model's content
contract: a proxy is served only when its model records a contract (what text and encoder
settings it was trained on) and the proxy was computed with that model's encoder. The stream
and the backfill refuse to write proxies of any other text or encoder settings; this is the
reader's guard against rows that reached the store some other way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig, ReaderConfig
from idproxy_stream.errors import IdProxyError
from idproxy_stream.events import ProxyRecord, as_item_id
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.proxy.model import ProxyManifest, read_proxy_manifest
from idproxy_stream.proxy.registry import list_versions, version_directory
from idproxy_stream.store.base import FeatureStore, build_store

logger = logging.getLogger(__name__)

SOURCE_ID, SOURCE_PROXY, SOURCE_FALLBACK = "id", "proxy", "fallback"


class ReaderSetupError(IdProxyError, ValueError):
    """The reader's bundle is missing; the message names the setting."""


def serving_manifests(registry) -> dict[str, ProxyManifest]:
    """Version -> manifest of every model in a registry (for ``ProxyReader(manifests=...)``)."""
    return {v: read_proxy_manifest(version_directory(registry, v)) for v in list_versions(registry)}


@dataclass(frozen=True)
class ReaderResult:
    """Embeddings for a batch of items, in the order asked.

    item_ids: (B,) int64.
    embeddings: (B, D) float32 vectors in the ranker's raw ID space.
    source: (B,) str, each "id", "proxy" or "fallback".
    model_version: (B,) object, the proxy's model version where source is "proxy", else None.
    """

    item_ids: np.ndarray
    embeddings: np.ndarray
    source: np.ndarray
    model_version: np.ndarray


class ProxyReader:
    """Reads embeddings under the switch-over policy (module docstring).

    Example::

        reader = ProxyReader(SqliteStore("proxies.sqlite"), id_space, ReaderConfig())
        result = reader.get([17, 42])   # result.embeddings (2, D), result.source ["id", "proxy"]
    """

    def __init__(
        self,
        store: FeatureStore,
        id_space: IdSpace,
        config: ReaderConfig,
        live_counts: Mapping[int, int] | None = None,
        manifests: Mapping[str, ProxyManifest] | None = None,
    ) -> None:
        self.store = store
        self.id_space = id_space
        self.config = config
        self.live_counts = live_counts
        self.manifests = manifests
        self.owns_store = False
        self.fallback_vector = self._fallback_vector()

    @classmethod
    def from_config(
        cls, config: AppConfig, live_counts: Mapping[int, int] | None = None
    ) -> ProxyReader:
        """The reader a ranker service runs: the store ``config.store`` names, the ID space and
        serving manifests of the bundle in ``config.stream.model_dir``, the ``config.reader``
        policy. Use it as a context manager (or call :meth:`close`) to close the store.

        Raises :class:`~idproxy_stream.store.base.StoreError` when the store does not open and
        :class:`ReaderSetupError` when the bundle has no ID space.
        """
        layout = BundleLayout(config.stream.model_dir)
        if not layout.id_space.is_dir():
            raise ReaderSetupError(
                f"stream.model_dir = {layout.root} holds no ID space: point it at the bundle "
                "`idproxy train` wrote"
            )
        id_space = IdSpace.load(layout.id_space)
        manifests = serving_manifests(layout.registry) if layout.registry.is_dir() else None
        store = build_store(config.store)
        reader = cls(store, id_space, config.reader, live_counts, manifests)
        reader.owns_store = True
        return reader

    def close(self) -> None:
        """Close the store when this reader opened it (:meth:`from_config`)."""
        if self.owns_store:
            self.store.close()

    def __enter__(self) -> ProxyReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fallback_vector(self) -> np.ndarray:
        mature = self.id_space.mature_mask(self.config.maturity_threshold)
        if self.config.fallback == "mean_id" and mature.any():
            return self.id_space.embeddings[mature].mean(axis=0).astype(np.float32)
        if self.config.fallback == "mean_id":
            logger.warning(
                "no item has >= %d interactions; the mean_id fallback is zeros",
                self.config.maturity_threshold,
            )
        return np.zeros(self.id_space.dim, dtype=np.float32)

    def interaction_counts(self, item_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B,) counts used for maturity: live counts where given, else the ID space's."""
        counts = np.where(rows >= 0, self.id_space.interaction_counts[np.maximum(rows, 0)], 0)
        if self.live_counts is not None:
            for position, item_id in enumerate(item_ids.tolist()):
                live = self.live_counts.get(item_id)
                if live is not None:
                    counts[position] = live
        return counts

    def breaks_contract(self, record: ProxyRecord) -> bool:
        """Whether ``record`` was not computed under its model's content contract (only
        checked when the reader was given the models' manifests)."""
        if self.manifests is None:
            return False
        manifest = self.manifests.get(record.model_version)
        return (
            manifest is None
            or manifest.content is None
            or record.encoder_fingerprint != manifest.encoder_fingerprint
        )

    def get(self, item_ids: Iterable[int]) -> ReaderResult:
        """Embeddings of ``item_ids`` (B,) under the policy; one store read for the non-mature."""
        ids = np.array([as_item_id(item_id) for item_id in item_ids], dtype=np.int64)
        rows = self.id_space.rows_of(ids)
        counts = self.interaction_counts(ids, rows)
        use_id = (rows >= 0) & (counts >= self.config.maturity_threshold)

        embeddings = np.tile(self.fallback_vector, (ids.shape[0], 1))
        source = np.full(ids.shape[0], SOURCE_FALLBACK, dtype=object)
        versions = np.full(ids.shape[0], None, dtype=object)
        embeddings[use_id] = self.id_space.embeddings[rows[use_id]]
        source[use_id] = SOURCE_ID

        wanted = ids[~use_id]
        if wanted.size:
            proxies = self.store.get(wanted.tolist(), self.config.serving_model_version)
            foreign = refused = 0
            for position in np.flatnonzero(~use_id):
                record = proxies.get(int(ids[position]))
                if record is None:
                    continue
                if self.breaks_contract(record):
                    refused += 1
                    continue
                if (
                    record.id_space_fingerprint != self.id_space.fingerprint
                    or record.dim != self.id_space.dim
                ):
                    foreign += 1
                    continue
                embeddings[position] = record.proxy
                source[position] = SOURCE_PROXY
                versions[position] = record.model_version
            if foreign:
                logger.warning(
                    "ignored %d proxies built for another ID space than %s (dim %d): "
                    "recompute them with the proxy model of the serving ranker",
                    foreign,
                    self.id_space.fingerprint,
                    self.id_space.dim,
                )
            if refused:
                logger.warning(
                    "ignored %d proxies whose model records no content contract or that another "
                    "encoder computed: recompute them with a backfill of a model trained on "
                    "the served text and encoder",
                    refused,
                )
        return ReaderResult(ids, embeddings.astype(np.float32), source.astype(str), versions)
