"""Artefact files checked on load: SHA-256 digests recorded at save time, JSON manifests read
with one-line errors.

Every saved artefact (a ProxyModel version, the ID space, the Faiss index) records the SHA-256
of each of its data files in its JSON manifest when it is written (:func:`file_digests`) and
checks them before it reads them (:func:`verify_file_digests`): weights with flipped values, a
truncated file or files mixed up between bundles are refused with the file's name instead of
loading silently or failing later inside a library. :func:`read_json_manifest` turns a damaged
manifest into the artefact's own error naming the file, never a raw ``JSONDecodeError``.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
MAX_REPR = 200


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_digests(directory: Path, names: list[str]) -> dict[str, str]:
    """``{name: sha256}`` of the named files in ``directory`` (recorded in a manifest)."""
    return {name: file_sha256(directory / name) for name in names}


def verify_file_digests(
    directory: Path,
    recorded: Any,
    names: list[str],
    error: type[Exception],
    manifest_name: str,
) -> None:
    """Raise ``error`` naming the file unless every one of ``names`` exists and has the digest
    ``recorded`` (the manifest's ``files`` mapping) holds for it."""
    manifest = directory / manifest_name
    if not isinstance(recorded, dict):
        raise error(
            f"{manifest} records no file digests ('files'): the artefact was written by an "
            "older version or edited; save it again"
        )
    for name in names:
        path = directory / name
        expected = recorded.get(name)
        if not isinstance(expected, str):
            raise error(f"{manifest} records no SHA-256 for {name}: save the artefact again")
        if not path.is_file():
            raise error(f"{path} is missing: copy the whole artefact directory again")
        if file_sha256(path) != expected:
            raise error(
                f"{path} does not match the SHA-256 recorded in {manifest}: the file is "
                "damaged, truncated or from another artefact; copy or save it again"
            )


def read_json_manifest(path: Path, error: type[Exception]) -> dict[str, Any]:
    """A JSON object from ``path``, or ``error`` naming the file (unreadable, not JSON, not an
    object, or holding NaN / Infinity)."""

    def refuse_constant(constant: str) -> float:
        raise ValueError(f"the non-finite number {constant}")

    try:
        raw = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as problem:
        reason = str(problem)[:MAX_REPR]
        raise error(f"{path} cannot be read as JSON ({reason}): save it again") from None
    if not isinstance(raw, dict):
        raise error(f"{path} holds a JSON {type(raw).__name__}, not an object: save it again")
    return raw


def finite_number(value: Any, what: str, error: type[Exception]) -> float:
    """``value`` as a finite float, else ``error`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise error(f"{what} must be a finite number, got {bounded_repr(value)}")
    return float(value)


def bounded_repr(value: Any, limit: int = MAX_REPR) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error never echoes a huge input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
