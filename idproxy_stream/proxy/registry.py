"""A directory registry of ProxyModel versions, with an atomically swapped ``LATEST`` pointer.

Layout::

    <registry>/versions/<version>/manifest.json, proxy_model.safetensors
    <registry>/LATEST              one line: the version serving now

Publishing writes the version directory under a temporary name, renames it into place, then
replaces ``LATEST`` by an atomic rename: a reader sees either the old or the new version, never
a half-written one. The stream polls :func:`latest_version` to hot-swap models.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from idproxy_stream.encoders.contract import ContentContract
from idproxy_stream.proxy.model import (
    ProxyManifest,
    ProxyModel,
    ProxyModelError,
    check_version_name,
    load_proxy_model,
    save_proxy_model,
)

LATEST_FILE = "LATEST"
VERSIONS_DIR = "versions"
__all__ = ["check_version_name", "latest_version", "load_version", "publish_version"]


def version_directory(registry: str | Path, version: str) -> Path:
    return Path(registry) / VERSIONS_DIR / check_version_name(version)


def publish_version(
    model: ProxyModel, manifest: ProxyManifest, registry: str | Path, make_latest: bool = True
) -> Path:
    """Save ``model`` as ``manifest.version`` in the registry; optionally point LATEST at it."""
    registry = Path(registry)
    target = version_directory(registry, manifest.version)
    if target.exists():
        raise ProxyModelError(
            f"model version {manifest.version} already exists in {registry}: choose a new version"
        )
    staging = registry / VERSIONS_DIR / f".staging-{uuid.uuid4().hex}"
    save_proxy_model(model, manifest, staging)
    os.replace(staging, target)
    if make_latest:
        set_latest(registry, manifest.version)
    return target


def set_latest(registry: str | Path, version: str) -> None:
    """Atomically point ``LATEST`` at an existing version."""
    registry = Path(registry)
    if not version_directory(registry, version).is_dir():
        raise ProxyModelError(f"cannot serve version {version}: not in {registry / VERSIONS_DIR}")
    temporary = registry / f".{LATEST_FILE}.{uuid.uuid4().hex}"
    temporary.write_text(version + "\n")
    os.replace(temporary, registry / LATEST_FILE)


def latest_version(registry: str | Path) -> str | None:
    """The version ``LATEST`` names, or None when nothing was published yet."""
    path = Path(registry) / LATEST_FILE
    if not path.is_file():
        return None
    return check_version_name(path.read_text().strip())


def list_versions(registry: str | Path) -> list[str]:
    directory = Path(registry) / VERSIONS_DIR
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_version(
    registry: str | Path,
    version: str | None = None,
    expected_encoder_fingerprint: str | None = None,
    expected_id_space_fingerprint: str | None = None,
    expected_content: ContentContract | None = None,
) -> tuple[ProxyModel, ProxyManifest]:
    """Load ``version`` (LATEST when None), checking fingerprints and the content contract
    (see ``load_proxy_model``)."""
    version = version or latest_version(registry)
    if version is None:
        raise ProxyModelError(
            f"no model published in {registry}: run `idproxy train` (or publish a version) first"
        )
    directory = checked_version_directory(registry, version)
    model, manifest = load_proxy_model(
        directory, expected_encoder_fingerprint, expected_id_space_fingerprint, expected_content
    )
    if manifest.version != version:
        raise ProxyModelError(
            f"{directory / 'manifest.json'} says version {manifest.version!r}, but it lies in "
            f"the directory of version {version!r}: publish versions with publish_version"
        )
    return model, manifest


def checked_version_directory(registry: str | Path, version: str) -> Path:
    """The version's directory, refused when it is a symlink or resolves outside the
    registry (a version directory must be the registry's own)."""
    directory = version_directory(registry, version)
    versions = (Path(registry) / VERSIONS_DIR).resolve()
    if directory.is_symlink() or directory.resolve().parent != versions:
        raise ProxyModelError(
            f"{directory} is a link out of the registry: publish the version into "
            f"{versions} with publish_version"
        )
    return directory


def remove_version(registry: str | Path, version: str) -> None:
    """Delete a version that is not the one LATEST names."""
    if latest_version(registry) == version:
        raise ProxyModelError(
            f"version {version} is serving (LATEST); point LATEST elsewhere first"
        )
    shutil.rmtree(version_directory(registry, version))
