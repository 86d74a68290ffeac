"""Faiss index over the L2-normalised ID embeddings of mature items (inner product = cosine).

Kinds: ``flat`` (exact, ``IndexFlatIP``), ``hnsw`` (``IndexHNSWFlat``, graph search),
``ivf`` (``IndexIVFFlat``, k-means cells); ``auto`` is Flat up to ``flat_max_size`` members
and ``large_kind`` beyond.

On disk (``save`` / ``load``), never pickle::

    <directory>/index.faiss            faiss.write_index output
    <directory>/index_members.safetensors  rows (M,) int64 into the ID table, item_ids (M,) int64
    <directory>/index.json             kind, dim, members, ID-space fingerprint, search params

Example::

    index = IdIndex.build(id_space, IndexConfig(), tau=20)
    item_ids, similarities, rows = index.search(proxies, k=10)   # (B, D) -> (B, 10) x 3
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from safetensors.numpy import load_file, save_file

from idproxy_stream.config import IndexConfig
from idproxy_stream.digests import file_digests, read_json_manifest, verify_file_digests
from idproxy_stream.errors import IdProxyError
from idproxy_stream.index.id_space import IdSpace, IdSpaceError, IdSpaceMismatchError

logger = logging.getLogger(__name__)

INDEX_FORMAT = "idproxy-id-index/1"
INDEX_FILE = "index.faiss"
MEMBERS_FILE = "index_members.safetensors"
MANIFEST_FILE = "index.json"
MISSING_NEIGHBOUR = -1


class IndexBuildError(IdProxyError, ValueError):
    """The index cannot be built or loaded as asked; the message says what to change."""


def normalised_rows(vectors: np.ndarray, name: str = "queries") -> np.ndarray:
    """(B, D) float32 copy with unit-L2 rows; zero rows stay zero. NaN/inf is a ValueError."""
    array = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a (B, D) matrix, got shape {array.shape}")
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"{name} rows {bad_rows[:8].tolist()} hold NaN or inf: drop or fix them first"
        )
    faiss.normalize_L2(array)
    return array


def choose_kind(config: IndexConfig, num_members: int) -> str:
    """The index kind ``config`` asks for at ``num_members`` members (resolves ``auto``)."""
    if config.kind != "auto":
        return config.kind
    return "flat" if num_members <= config.flat_max_size else config.large_kind


def _new_faiss_index(kind: str, dim: int, num_members: int, config: IndexConfig) -> faiss.Index:
    metric = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, metric)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        return index
    if kind == "ivf":
        # Faiss wants >= 39 training points per cell; fewer cells keep small tables usable.
        nlist = max(1, min(config.ivf_nlist, num_members // 39))
        return faiss.index_factory(dim, f"IVF{nlist},Flat", metric)
    raise IndexBuildError(f"unknown index kind {kind!r}: use flat, hnsw, ivf or auto")


def _apply_search_params(index: faiss.Index, kind: str, ef_search: int, nprobe: int) -> None:
    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = ef_search
    elif kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = nprobe


@dataclass
class IdIndex:
    """A Faiss index whose members are rows of one :class:`IdSpace`.

    index: the faiss index over the members' unit ID embeddings.
    member_rows: (M,) int64 rows of the members in the ID table.
    member_ids: (M,) int64 item ids of the members.
    fingerprint: the ID space's fingerprint.
    """

    index: faiss.Index
    kind: str
    member_rows: np.ndarray
    member_ids: np.ndarray
    fingerprint: str
    ef_search: int
    nprobe: int

    @classmethod
    def build(cls, id_space: IdSpace, config: IndexConfig, tau: int) -> IdIndex:
        """Index the items of ``id_space`` with at least ``tau`` interactions."""
        member_rows = np.flatnonzero(id_space.mature_mask(tau)).astype(np.int64)
        if member_rows.size == 0:
            raise IndexBuildError(
                f"no item has >= {tau} interactions, so the mature ID space is empty: lower "
                "the maturity threshold (stage1.tau) or train on more data"
            )
        vectors = normalised_rows(id_space.embeddings[member_rows], "ID embeddings")
        kind = choose_kind(config, member_rows.size)
        index = _new_faiss_index(kind, id_space.dim, member_rows.size, config)
        started = time.perf_counter()
        if not index.is_trained:
            rng = np.random.default_rng(config.seed)
            sample_size = min(member_rows.size, 256 * faiss.extract_index_ivf(index).nlist)
            index.train(vectors[rng.choice(member_rows.size, sample_size, replace=False)])
        index.add(vectors)
        _apply_search_params(index, kind, config.hnsw_ef_search, config.ivf_nprobe)
        logger.info(
            "built %s index over %d mature IDs (of %d, tau=%d, D=%d) in %.2fs",
            kind,
            member_rows.size,
            id_space.num_items,
            tau,
            id_space.dim,
            time.perf_counter() - started,
        )
        return cls(
            index=index,
            kind=kind,
            member_rows=member_rows,
            member_ids=id_space.item_ids[member_rows].copy(),
            fingerprint=id_space.fingerprint,
            ef_search=config.hnsw_ef_search,
            nprobe=config.ivf_nprobe,
        )

    @property
    def num_members(self) -> int:
        return int(self.member_rows.shape[0])

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top-``k`` cosine neighbours of each query, in one faiss search.

        queries: (B, D) raw vectors (normalised here).
        Returns item_ids (B, k) int64, similarities (B, k) float32 (best first) and
        rows (B, k) int64 into the ID table; a neighbour the index cannot return (k above the
        member count, or an approximate search that came up short) is -1 / -1.0 / -1.
        """
        unit = normalised_rows(queries)
        if unit.shape[1] != self.dim:
            raise ValueError(
                f"queries have dimension {unit.shape[1]} but the ID space has {self.dim}: "
                "the proxy model and the index belong to different rankers"
            )
        similarities, positions = self.index.search(unit, k)
        missing = positions < 0
        safe = np.where(missing, 0, positions)
        item_ids = np.where(missing, MISSING_NEIGHBOUR, self.member_ids[safe])
        rows = np.where(missing, MISSING_NEIGHBOUR, self.member_rows[safe])
        similarities = np.where(missing, np.float32(-1.0), similarities).astype(np.float32)
        return item_ids.astype(np.int64), similarities, rows.astype(np.int64)

    def manifest(self) -> dict:
        return {
            "format": INDEX_FORMAT,
            "kind": self.kind,
            "dim": self.dim,
            "num_members": self.num_members,
            "id_space_fingerprint": self.fingerprint,
            "hnsw_ef_search": self.ef_search,
            "ivf_nprobe": self.nprobe,
            "faiss_version": faiss.__version__,
        }

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write the index, its members and the JSON manifest (with ``extra`` keys merged in)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(directory / INDEX_FILE))
        save_file(
            {"rows": self.member_rows, "item_ids": self.member_ids}, str(directory / MEMBERS_FILE)
        )
        files = file_digests(directory, [INDEX_FILE, MEMBERS_FILE])
        manifest = {**self.manifest(), **(extra or {}), "files": files}
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        return directory

    @classmethod
    def read_manifest(cls, directory: str | Path) -> dict:
        path = Path(directory) / MANIFEST_FILE
        if not path.is_file():
            raise IdSpaceError(
                f"{directory} holds no ID index ({MANIFEST_FILE} missing): build one with "
                "IdIndex.build(...).save(directory)"
            )
        manifest = read_json_manifest(path, IdSpaceError)
        if manifest.get("format") != INDEX_FORMAT:
            raise IdSpaceError(
                f"{path} has format {manifest.get('format')!r}; this version reads "
                f"{INDEX_FORMAT!r}: rebuild the index"
            )
        return manifest

    @classmethod
    def load(cls, directory: str | Path, expected_fingerprint: str) -> IdIndex:
        """Read an index saved by :meth:`save`, refusing one built for another ID space."""
        directory = Path(directory)
        manifest = cls.read_manifest(directory)
        found = manifest.get("id_space_fingerprint")
        if found != expected_fingerprint:
            raise IdSpaceMismatchError(
                f"the index in {directory}",
                expected=expected_fingerprint,
                found=found,
                rebuild="rebuild it from the current ID space (IdIndex.build or "
                "NeighbourChecker.build with the ranker's IdSpace) and save it again",
            )
        verify_file_digests(
            directory,
            manifest.get("files"),
            [INDEX_FILE, MEMBERS_FILE],
            IdSpaceError,
            MANIFEST_FILE,
        )
        try:
            index = faiss.read_index(str(directory / INDEX_FILE))
            members = load_file(str(directory / MEMBERS_FILE))
            kind, dim = manifest["kind"], manifest["dim"]
            ef_search, nprobe = manifest["hnsw_ef_search"], manifest["ivf_nprobe"]
        except KeyError as missing:
            raise IdSpaceError(
                f"{directory / MANIFEST_FILE} lacks the key {missing}: rebuild the index"
            ) from None
        except Exception as error:  # faiss' and safetensors' own errors: name the files
            raise IdSpaceError(
                f"{directory}: {INDEX_FILE} / {MEMBERS_FILE} cannot be read "
                f"({type(error).__name__}): rebuild the index"
            ) from None
        if index.ntotal != members["rows"].shape[0] or index.d != dim:
            raise IdSpaceError(
                f"{directory}: {INDEX_FILE} holds {index.ntotal} vectors of dim {index.d} but "
                f"the manifest says {members['rows'].shape[0]} of dim {manifest['dim']}: the "
                "files are mixed up; rebuild the index"
            )
        _apply_search_params(index, kind, ef_search, nprobe)
        return cls(
            index=index,
            kind=kind,
            member_rows=members["rows"],
            member_ids=members["item_ids"],
            fingerprint=found,
            ef_search=ef_search,
            nprobe=nprobe,
        )
