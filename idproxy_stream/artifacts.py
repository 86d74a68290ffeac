"""Where a trained model bundle keeps its parts (written by training, read by the stream).

Layout of a model directory::

    <model_dir>/ranker/      the frozen ranker (safetensors + JSON)
    <model_dir>/id_space/    the ranker's ID table of mature items + fingerprint
    <model_dir>/index/       Faiss index over the ID space + calibrated void threshold
    <model_dir>/registry/    ProxyModel versions and the LATEST pointer (proxy/registry.py)
    <model_dir>/bundle.json  what trained it: data summary, split counts, metrics, timings
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BundleLayout:
    """Paths of the parts of a model bundle rooted at ``root``."""

    root: Path

    @property
    def ranker(self) -> Path:
        return self.root / "ranker"

    @property
    def id_space(self) -> Path:
        return self.root / "id_space"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def summary(self) -> Path:
        return self.root / "bundle.json"
