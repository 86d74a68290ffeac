"""The ranker's ID space: item ids, their learned ID embeddings and interaction counts.

Training builds an :class:`IdSpace` from the trained ranker's item table and saves it next to
the model artefact; the proxy model, the Faiss index and every stored proxy carry its
``fingerprint``, so a proxy or index built for one ID table is never used with another.

On disk (``save`` / ``load``)::

    <directory>/id_space.safetensors   item_ids (N,) int64, embeddings (N, D) float32,
                                       interaction_counts (N,) int64
    <directory>/id_space.json          {"format": ..., "fingerprint": ..., "num_items": N, "dim": D}
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from idproxy_stream.digests import file_digests, read_json_manifest, verify_file_digests
from idproxy_stream.errors import IdProxyError

ID_SPACE_FORMAT = "idproxy-id-space/1"
ID_SPACE_WEIGHTS = "id_space.safetensors"
ID_SPACE_MANIFEST = "id_space.json"


class IdSpaceError(IdProxyError, ValueError):
    """An ID space is malformed or its files are missing; the message says what to fix."""


class IdSpaceMismatchError(IdSpaceError):
    """An artefact was built for a different ID table than the one it is used with."""

    def __init__(self, what: str, expected: str, found: str, rebuild: str) -> None:
        super().__init__(
            f"{what} was built for ID space {found}, but the ranker's ID space is {expected}: "
            f"{rebuild}"
        )
        self.expected = expected
        self.found = found


def id_space_fingerprint(item_ids: np.ndarray, embeddings: np.ndarray) -> str:
    """sha256 (first 16 hex digits) of the ID table: shape, int64 ids, float32 embeddings.

    Arrays are normalised to little-endian int64 / float32 C order first, so the same table
    gives the same fingerprint whatever dtype or layout it arrived in.
    """
    ids = np.ascontiguousarray(item_ids, dtype="<i8")
    table = np.ascontiguousarray(embeddings, dtype="<f4")
    digest = hashlib.sha256()
    digest.update(f"{ID_SPACE_FORMAT}:{table.shape[0]}x{table.shape[1]}:".encode())
    digest.update(ids.tobytes())
    digest.update(table.tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class IdSpace:
    """The ranker's item ID table.

    item_ids: (N,) int64 raw item ids, one per row of the ranker's ID table, unique.
    embeddings: (N, D) float32 learned ID embeddings (raw, not normalised).
    interaction_counts: (N,) int64 interactions per item in the ranker's training data.
    fingerprint: :func:`id_space_fingerprint` of ``item_ids`` and ``embeddings``.

    Build one with :meth:`from_arrays`, which computes the fingerprint.
    """

    item_ids: np.ndarray
    embeddings: np.ndarray
    interaction_counts: np.ndarray
    fingerprint: str

    def __post_init__(self) -> None:
        item_ids = np.ascontiguousarray(self.item_ids, dtype=np.int64)
        embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        counts = np.ascontiguousarray(self.interaction_counts, dtype=np.int64)
        if item_ids.ndim != 1 or embeddings.ndim != 2 or counts.ndim != 1:
            raise IdSpaceError(
                f"IdSpace wants item_ids (N,), embeddings (N, D), interaction_counts (N,); got "
                f"{item_ids.shape}, {embeddings.shape}, {counts.shape}"
            )
        if not (item_ids.shape[0] == embeddings.shape[0] == counts.shape[0]):
            raise IdSpaceError(
                f"IdSpace arrays disagree on N: {item_ids.shape[0]} ids, "
                f"{embeddings.shape[0]} embeddings, {counts.shape[0]} counts"
            )
        if item_ids.shape[0] == 0 or embeddings.shape[1] == 0:
            raise IdSpaceError("IdSpace is empty: it needs at least one item and one dimension")
        if np.unique(item_ids).shape[0] != item_ids.shape[0]:
            raise IdSpaceError("IdSpace item_ids must be unique: one row per item")
        if not np.isfinite(embeddings).all():
            raise IdSpaceError("IdSpace embeddings hold NaN or inf: check the trained ranker")
        if (counts < 0).any():
            raise IdSpaceError("IdSpace interaction_counts must be >= 0")
        expected = id_space_fingerprint(item_ids, embeddings)
        if self.fingerprint != expected:
            raise IdSpaceError(
                f"IdSpace fingerprint {self.fingerprint!r} does not match its table "
                f"({expected}); build it with IdSpace.from_arrays(...)"
            )
        for name, array in (
            ("item_ids", item_ids),
            ("embeddings", embeddings),
            ("interaction_counts", counts),
        ):
            array.setflags(write=False)
            object.__setattr__(self, name, array)

    @classmethod
    def from_arrays(
        cls, item_ids: np.ndarray, embeddings: np.ndarray, interaction_counts: np.ndarray
    ) -> IdSpace:
        """An ID space with its fingerprint computed from ``item_ids`` and ``embeddings``."""
        ids = np.asarray(item_ids, dtype=np.int64)
        table = np.asarray(embeddings, dtype=np.float32)
        if table.ndim != 2:
            raise IdSpaceError(f"embeddings must be (N, D), got shape {table.shape}")
        return cls(ids, table, np.asarray(interaction_counts), id_space_fingerprint(ids, table))

    @property
    def num_items(self) -> int:
        return int(self.item_ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def mature_mask(self, tau: int) -> np.ndarray:
        """(N,) bool: items with at least ``tau`` interactions in the training data."""
        return self.interaction_counts >= tau

    @cached_property
    def _sorted_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.item_ids, kind="stable")
        return self.item_ids[order], order

    def rows_of(self, item_ids: np.ndarray) -> np.ndarray:
        """(B,) int64 row of each item id in the table, -1 for ids not in the ID space."""
        queries = np.asarray(item_ids, dtype=np.int64).reshape(-1)
        sorted_ids, order = self._sorted_lookup
        positions = np.searchsorted(sorted_ids, queries)
        positions = np.minimum(positions, sorted_ids.shape[0] - 1)
        found = sorted_ids[positions] == queries
        return np.where(found, order[positions], -1).astype(np.int64)

    def save(self, directory: str | Path) -> Path:
        """Write ``id_space.safetensors`` and ``id_space.json`` under ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file(
            {
                "item_ids": self.item_ids,
                "embeddings": self.embeddings,
                "interaction_counts": self.interaction_counts,
            },
            str(directory / ID_SPACE_WEIGHTS),
        )
        manifest = {
            "format": ID_SPACE_FORMAT,
            "fingerprint": self.fingerprint,
            "num_items": self.num_items,
            "dim": self.dim,
            "files": file_digests(directory, [ID_SPACE_WEIGHTS]),
        }
        (directory / ID_SPACE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> IdSpace:
        """Read an ID space saved by :meth:`save`; the stored fingerprint is re-verified."""
        directory = Path(directory)
        weights, manifest_path = directory / ID_SPACE_WEIGHTS, directory / ID_SPACE_MANIFEST
        if not weights.is_file() or not manifest_path.is_file():
            raise IdSpaceError(
                f"{directory} holds no ID space: expected {ID_SPACE_WEIGHTS} and "
                f"{ID_SPACE_MANIFEST} (written by IdSpace.save)"
            )
        manifest = read_json_manifest(manifest_path, IdSpaceError)
        if manifest.get("format") != ID_SPACE_FORMAT:
            raise IdSpaceError(
                f"{manifest_path} has format {str(manifest.get('format'))[:100]!r}; "
                f"this version reads {ID_SPACE_FORMAT!r}"
            )
        try:
            tensors = load_file(str(weights))
        except Exception as error:  # safetensors' own errors: name the file instead
            raise IdSpaceError(f"{weights} cannot be read ({type(error).__name__})") from None
        missing = {"item_ids", "embeddings", "interaction_counts"} - set(tensors)
        if missing:
            raise IdSpaceError(f"{weights} lacks tensors {sorted(missing)}")
        found = id_space_fingerprint(tensors["item_ids"], tensors["embeddings"])
        if found != manifest.get("fingerprint"):
            raise IdSpaceError(
                f"{weights} does not match the fingerprint in {manifest_path} "
                f"({found} != {str(manifest.get('fingerprint'))[:80]}): the files were "
                "modified or mixed up; re-export the ID space from the trained ranker"
            )
        # The fingerprint covers ids and embeddings; the digest also covers the counts.
        verify_file_digests(
            directory, manifest.get("files"), [ID_SPACE_WEIGHTS], IdSpaceError, ID_SPACE_MANIFEST
        )
        return cls(tensors["item_ids"], tensors["embeddings"], tensors["interaction_counts"], found)
