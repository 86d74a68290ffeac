"""An exported ID table: a ranker's item ID embeddings and interaction counts, without the ranker.

For teams that cannot hand over a forward pass (``idproxy train --id-table PATH``). Three
formats, none of them pickle:

- **Parquet** (``*.parquet``): columns ``item_id`` (integer), ``embedding`` (list of floats, one
  length) and ``interactions`` (integer >= 0, the item's training interactions).
- **NumPy** (a folder): ``item_ids.npy`` (N,) integers, ``embeddings.npy`` (N, D) floats,
  ``interactions.npy`` (N,) integers; read with ``allow_pickle=False``.
- **safetensors** (``*.safetensors``): tensors ``item_ids``, ``embeddings``, ``interactions``
  with the NumPy shapes.

Every problem is one :class:`IdTableError` line naming the file and column.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from idproxy_stream.errors import IdProxyError

COLUMNS = ("item_ids", "embeddings", "interactions")  # NumPy file stems / safetensors keys
PARQUET_COLUMNS = {"item_ids": "item_id", "embeddings": "embedding", "interactions": "interactions"}


class IdTableError(IdProxyError, ValueError):
    """An ID table file is missing or malformed; the message names the file and column."""


@dataclass(frozen=True)
class IdTable:
    """item_ids: (N,) int64; embeddings: (N, D) float32; interactions: (N,) int64."""

    item_ids: np.ndarray
    embeddings: np.ndarray
    interactions: np.ndarray


def _read_parquet(path: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for an unreadable file
        raise IdTableError(f"{path}: not a readable Parquet file ({error})") from error
    columns = {}
    for key, column in PARQUET_COLUMNS.items():
        if column not in table.column_names:
            raise IdTableError(
                f"{path}: missing column {column!r} (need item_id, embedding, interactions)"
            )
        values = table.column(column).to_pylist()
        if key == "embeddings":
            lengths = {len(v) if v is not None else -1 for v in values}
            if len(lengths) != 1 or -1 in lengths:
                raise IdTableError(
                    f"{path}: column 'embedding' must hold lists of one length, found lengths "
                    f"{sorted(lengths)[:5]} (-1: null)"
                )
            columns[key] = np.asarray(values, dtype=np.float64)
        else:
            columns[key] = np.asarray(values, dtype=object)
    return columns


def _read_numpy(folder: Path) -> dict[str, np.ndarray]:
    columns = {}
    for key in COLUMNS:
        path = folder / f"{key}.npy"
        if not path.is_file():
            raise IdTableError(f"{path}: missing (an ID table folder holds {', '.join(COLUMNS)})")
        try:
            columns[key] = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise IdTableError(f"{path}: not a plain NumPy array ({error})") from error
    return columns


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise IdTableError(f"{path}: not a readable safetensors file ({error})") from error
    missing = [key for key in COLUMNS if key not in tensors]
    if missing:
        raise IdTableError(f"{path}: missing tensor {missing[0]!r} (need {', '.join(COLUMNS)})")
    return {key: tensors[key] for key in COLUMNS}


def _integers(values: np.ndarray, where: str) -> np.ndarray:
    """``values`` as int64, or IdTableError naming ``where`` for non-integers."""
    try:
        as_float = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise IdTableError(f"{where} must hold integers ({error})") from error
    if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
        raise IdTableError(f"{where} must hold integers, found {values[:3].tolist()} ...")
    return as_float.astype(np.int64)


def validate(columns: dict[str, np.ndarray], source: Path) -> IdTable:
    """Check shapes, dtypes and values; names the file and column of the first problem."""
    name = {
        key: f"{source}: {PARQUET_COLUMNS[key] if source.suffix == '.parquet' else key}"
        for key in COLUMNS
    }
    embeddings = np.asarray(columns["embeddings"])
    if embeddings.ndim != 2 or embeddings.shape[0] == 0 or embeddings.shape[1] == 0:
        raise IdTableError(
            f"{name['embeddings']} must be (N, D) with N, D > 0, got {embeddings.shape}"
        )
    if not np.issubdtype(embeddings.dtype, np.number) or not np.all(np.isfinite(embeddings)):
        raise IdTableError(f"{name['embeddings']} must hold finite numbers")
    item_ids = _integers(np.asarray(columns["item_ids"]).reshape(-1), name["item_ids"])
    counts = _integers(np.asarray(columns["interactions"]).reshape(-1), name["interactions"])
    for key, values in (("item_ids", item_ids), ("interactions", counts)):
        if len(values) != embeddings.shape[0]:
            raise IdTableError(
                f"{name[key]} has {len(values)} rows but the embeddings {embeddings.shape[0]}"
            )
    unique, seen = np.unique(item_ids, return_counts=True)
    if np.any(seen > 1):
        raise IdTableError(f"{name['item_ids']}: duplicate item id {int(unique[seen > 1][0])}")
    if np.any(counts < 0):
        raise IdTableError(f"{name['interactions']} must be >= 0, found {int(counts.min())}")
    return IdTable(item_ids, embeddings.astype(np.float32), counts)


def load_id_table(path: str | Path) -> IdTable:
    """Read and validate an exported ID table (module docstring for the formats)."""
    path = Path(path)
    if path.is_dir():
        return validate(_read_numpy(path), path)
    if not path.is_file():
        raise IdTableError(f"--id-table {path}: no such file or folder")
    if path.suffix == ".parquet":
        return validate(_read_parquet(path), path)
    if path.suffix == ".safetensors":
        return validate(_read_safetensors(path), path)
    raise IdTableError(
        f"--id-table {path}: use a .parquet file, a .safetensors file or a folder of .npy files"
    )
