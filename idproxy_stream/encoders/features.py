"""Extracted content features of a catalogue, and their Parquet form.

One row per item: ``item_id``, ``global_embedding`` (D floats), ``cluster_states``
(K x D floats: the layer states pooled by :class:`~idproxy_stream.encoders.layers.LayerClusters`),
``image_error`` (the :class:`~idproxy_stream.encoders.images.ImageInputError` reason when the
item's image could not be used and it was encoded from text alone, else null) and
``text_truncated``. Vectors are Arrow ``fixed_size_list<float32>`` columns; the encoder
fingerprint, the clusters and the content contract (JSON: the text fields and encoder settings
the features were computed under, see ``encoders/contract.py``) are in the schema metadata, so
a reader can refuse features of another encoder or another text.

A feature *directory* holds part files of one fingerprint (written by the Ray job); a
single file is what :meth:`FeatureTable.write_parquet` writes.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from idproxy_stream.encoders.contract import ContentContract, describe_mismatch
from idproxy_stream.encoders.layers import LayerClusters
from idproxy_stream.errors import IdProxyError

logger = logging.getLogger(__name__)

FINGERPRINT_KEY = b"idproxy.encoder_fingerprint"
CLUSTERS_KEY = b"idproxy.layer_clusters"
CONTENT_KEY = b"idproxy.content_contract"
FORMAT_KEY = b"idproxy.features_format"
FORMAT_VERSION = b"1"


class FeatureTableError(IdProxyError, ValueError):
    """Feature files are missing, malformed or mix encoders; the message says what to fix."""


@dataclass(frozen=True)
class FeatureTable:
    """Content features of N items.

    item_ids: (N,) int64.
    global_embedding: (N, D) float32.
    cluster_states: (N, K, D) float32.
    clusters: the layer clusters that produced ``cluster_states`` (K of them).
    encoder_fingerprint: the encoder's :attr:`ContentEncoder.fingerprint`.
    image_errors: (N,) object array of reason codes or None.
    text_truncated: (N,) bool.
    content: the content contract the features were computed under (None: unknown, e.g.
        features made by hand; a model trained on them cannot be served).
    """

    item_ids: np.ndarray
    global_embedding: np.ndarray
    cluster_states: np.ndarray
    clusters: LayerClusters
    encoder_fingerprint: str
    image_errors: np.ndarray
    text_truncated: np.ndarray
    content: ContentContract | None = None

    def __post_init__(self) -> None:
        count = len(self.item_ids)
        if self.global_embedding.ndim != 2 or len(self.global_embedding) != count:
            raise FeatureTableError(
                f"global_embedding must be (N={count}, D), got {self.global_embedding.shape}"
            )
        expected = (count, self.clusters.num_clusters, self.global_embedding.shape[1])
        if self.cluster_states.shape != expected:
            raise FeatureTableError(
                f"cluster_states must be (N, K, D) = {expected}, got {self.cluster_states.shape}"
            )
        if len(self.image_errors) != count or len(self.text_truncated) != count:
            raise FeatureTableError("image_errors and text_truncated need one entry per item")

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def hidden_size(self) -> int:
        """D."""
        return int(self.global_embedding.shape[1])

    def to_arrow(self) -> pa.Table:
        """Arrow table with the fingerprint and clusters in the schema metadata."""
        _, num_clusters, width = self.cluster_states.shape
        global_values = pa.array(
            np.ascontiguousarray(self.global_embedding, dtype=np.float32).reshape(-1)
        )
        cluster_values = pa.array(
            np.ascontiguousarray(self.cluster_states, dtype=np.float32).reshape(-1)
        )
        columns = {
            "item_id": pa.array(np.asarray(self.item_ids, dtype=np.int64)),
            "global_embedding": pa.FixedSizeListArray.from_arrays(global_values, width),
            "cluster_states": pa.FixedSizeListArray.from_arrays(
                pa.FixedSizeListArray.from_arrays(cluster_values, width), num_clusters
            ),
            "image_error": pa.array(list(self.image_errors), type=pa.string()),
            "text_truncated": pa.array(np.asarray(self.text_truncated, dtype=bool)),
        }
        metadata = {
            FINGERPRINT_KEY: self.encoder_fingerprint.encode(),
            CLUSTERS_KEY: json.dumps(self.clusters.to_dict()).encode(),
            FORMAT_KEY: FORMAT_VERSION,
        }
        if self.content is not None:
            metadata[CONTENT_KEY] = json.dumps(self.content.to_dict()).encode()
        return pa.table(columns).replace_schema_metadata(metadata)

    def write_parquet(self, path: str | Path) -> Path:
        """Write one Parquet file atomically (temp file + rename) and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        pq.write_table(self.to_arrow(), temporary)
        os.replace(temporary, path)
        return path


def _fixed_size_to_numpy(column: pa.ChunkedArray, shape: tuple[int, ...]) -> np.ndarray:
    array = column.combine_chunks()
    while pa.types.is_fixed_size_list(array.type):
        array = array.flatten()
    return array.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(shape)


def feature_files(path: str | Path) -> list[Path]:
    """The Parquet files under a feature path (itself when it is a file), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FeatureTableError(f"feature path {path} does not exist")
    return sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))


def table_from_arrow(table: pa.Table) -> FeatureTable:
    """Inverse of :meth:`FeatureTable.to_arrow`."""
    metadata = table.schema.metadata or {}
    if FINGERPRINT_KEY not in metadata:
        raise FeatureTableError("table has no encoder fingerprint metadata")
    clusters = LayerClusters.from_dict(json.loads(metadata[CLUSTERS_KEY]))
    count = table.num_rows
    width = table.schema.field("global_embedding").type.list_size
    return FeatureTable(
        item_ids=table.column("item_id").to_numpy().astype(np.int64),
        global_embedding=_fixed_size_to_numpy(table.column("global_embedding"), (count, width)),
        cluster_states=_fixed_size_to_numpy(
            table.column("cluster_states"), (count, clusters.num_clusters, width)
        ),
        clusters=clusters,
        encoder_fingerprint=metadata[FINGERPRINT_KEY].decode(),
        image_errors=np.array(table.column("image_error").to_pylist(), dtype=object),
        text_truncated=table.column("text_truncated").to_numpy(zero_copy_only=False).astype(bool),
        content=content_from_metadata(metadata),
    )


def content_from_metadata(metadata: dict[bytes, bytes]) -> ContentContract | None:
    """The content contract in a feature file's schema metadata, None when it has none."""
    raw = metadata.get(CONTENT_KEY)
    return None if raw is None else ContentContract.from_dict(json.loads(raw))


def read_feature_table(
    path: str | Path, fingerprint: str | None = None, content: ContentContract | None = None
) -> FeatureTable:
    """Read a feature file or directory of part files into one :class:`FeatureTable`.

    All files must share one encoder fingerprint, clusters and content contract (and match
    ``fingerprint`` and ``content`` when given); otherwise :class:`FeatureTableError`, whose
    message names every setting that differs. Duplicate item ids keep the first row.
    """
    files = feature_files(path)
    if not files:
        raise FeatureTableError(f"no feature files under {path}")
    tables = []
    for file in files:
        table = table_from_arrow(pq.read_table(file))
        if fingerprint is not None and table.encoder_fingerprint != fingerprint:
            raise FeatureTableError(
                f"{file} holds features of encoder {table.encoder_fingerprint}, not "
                f"{fingerprint}: re-extract with this encoder"
            )
        if content is not None and (problem := describe_mismatch(table.content, content)):
            raise FeatureTableError(
                f"{file} was extracted under another content contract ({problem}): "
                "re-extract with these settings"
            )
        tables.append(table)
    return concat_feature_tables(tables)


def concat_feature_tables(tables: list[FeatureTable]) -> FeatureTable:
    """Rows of several tables of one encoder and clusters; duplicate item ids keep the first."""
    first = tables[0]
    for table in tables[1:]:
        if table.encoder_fingerprint != first.encoder_fingerprint:
            raise FeatureTableError(
                f"feature tables of different encoders ({first.encoder_fingerprint} and "
                f"{table.encoder_fingerprint}) cannot be combined"
            )
        if table.clusters != first.clusters:
            raise FeatureTableError(
                f"feature tables with different layer clusters ({first.clusters.boundaries} and "
                f"{table.clusters.boundaries}) cannot be combined"
            )
        if table.content != first.content:
            problem = describe_mismatch(first.content, table.content) if table.content else None
            raise FeatureTableError(
                "feature tables of different content contracts cannot be combined "
                f"({problem or 'one records none'})"
            )
    item_ids = np.concatenate([t.item_ids for t in tables])
    _, first_rows = np.unique(item_ids, return_index=True)
    keep = np.sort(first_rows)
    if len(keep) < len(item_ids):
        logger.warning("dropped %d duplicate item rows", len(item_ids) - len(keep))
    return FeatureTable(
        item_ids=item_ids[keep],
        global_embedding=np.concatenate([t.global_embedding for t in tables])[keep],
        cluster_states=np.concatenate([t.cluster_states for t in tables])[keep],
        clusters=first.clusters,
        encoder_fingerprint=first.encoder_fingerprint,
        image_errors=np.concatenate([t.image_errors for t in tables])[keep],
        text_truncated=np.concatenate([t.text_truncated for t in tables])[keep],
        content=first.content,
    )
