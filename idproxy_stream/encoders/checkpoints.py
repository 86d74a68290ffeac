"""Where a model's files are, a digest of which weights they hold, and fingerprints.

A model reference is a local folder or a Hugging Face hub id. Hub ids are resolved to the
local snapshot folder first (download only when ``local_files_only`` is False and
``HF_HUB_OFFLINE`` is not set), so the model and its processor always load from one folder
and the fingerprint is computed from the same files that were loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idproxy_stream.errors import IdProxyError

logger = logging.getLogger(__name__)

# Bytes of tensor data hashed at each end of every safetensors file: cheap even for multi-GB
# checkpoints, and enough to tell apart two checkpoints with the same shapes (e.g. two seeds).
WEIGHT_SAMPLE_BYTES = 1 << 20


class CheckpointError(IdProxyError, ValueError):
    """A model reference cannot be resolved to a folder of weights; the message says what to fix."""


def resolve_model_dir(model: str | Path, local_files_only: bool) -> Path:
    """The local folder holding ``model`` (a folder path or a hub id).

    Raises :class:`CheckpointError` when a hub id is not cached and downloading is off.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise CheckpointError(f"model {model!s} is a file; pass the checkpoint folder instead")
    if str(model).startswith(("/", ".", "~")):
        raise CheckpointError(f"model folder {model!s} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(model), local_files_only=local_files_only))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"model {model!s} is not in the local Hugging Face cache and downloading is off "
            "(local_files_only=true or HF_HUB_OFFLINE=1): download it first or pass a folder"
        ) from None


def _safetensors_identity(path: Path) -> str:
    """Hash of a safetensors file's header (names, dtypes, shapes) and its first/last bytes."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(8))
        digest.update(handle.read(header_length))
        data_start = 8 + header_length
        digest.update(handle.read(WEIGHT_SAMPLE_BYTES))
        tail_start = max(data_start, size - WEIGHT_SAMPLE_BYTES)
        handle.seek(tail_start)
        digest.update(handle.read(WEIGHT_SAMPLE_BYTES))
    return digest.hexdigest()


def weights_identity(model_dir: Path) -> dict[str, str]:
    """``{file name: identity hash}`` for config.json and every safetensors file in the folder."""
    identity: dict[str, str] = {}
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{model_dir} has no config.json: is it a Hugging Face checkpoint?")
    identity["config.json"] = hashlib.sha256(config_path.read_bytes()).hexdigest()
    weight_files = sorted(model_dir.glob("*.safetensors"))
    if not weight_files:
        raise CheckpointError(
            f"{model_dir} has no *.safetensors weights; convert the checkpoint to safetensors "
            "(pickled .bin weights are not loaded)"
        )
    for weight_file in weight_files:
        identity[weight_file.name] = _safetensors_identity(weight_file)
    return identity


def weights_digest(model_dir: Path) -> str:
    """16 hex digits identifying the weights in ``model_dir`` (see :func:`weights_identity`)."""
    payload = json.dumps(weights_identity(model_dir), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """Stable 16-hex-digit hash of output-changing ``settings`` (weights by their digest)."""
    payload = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
