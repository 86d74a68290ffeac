"""The versioned ProxyModel artefact: coarse projector + fine adaptor + residual gate.

On disk a model is a directory with ``proxy_model.safetensors`` (weights and calibration
buffers) and ``manifest.json``: version, encoder fingerprint, ID-space fingerprint, the content
contract (the text fields and encoder settings its features were computed under, see
``encoders/contract.py``), dimensions, layer clusters, training data summary and metrics.
Loading checks the fingerprints and the contract against the encoder, text and ID space it
will be used with and refuses a mismatch: a proxy computed from another encoder's features or
another text, or aimed at another ranker's ID table, would be silently wrong.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from idproxy_stream.digests import (
    bounded_repr,
    file_digests,
    finite_number,
    read_json_manifest,
    verify_file_digests,
)
from idproxy_stream.encoders.contract import ContentContract, describe_mismatch
from idproxy_stream.encoders.layers import LayerClusters
from idproxy_stream.errors import IdProxyError
from idproxy_stream.proxy.adaptor import FineAdaptor
from idproxy_stream.proxy.gate import ResidualGate
from idproxy_stream.proxy.projector import CoarseProjector

WEIGHTS_FILE = "proxy_model.safetensors"
MANIFEST_FILE = "manifest.json"
FORMAT = "idproxy-proxy-model/1"
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ProxyModelError(IdProxyError, ValueError):
    """A saved ProxyModel is missing or malformed; the message says what to fix."""


class ProxyModelMismatchError(ProxyModelError):
    """The model was trained for another encoder or another ranker ID space."""


def check_version_name(version: object) -> str:
    """``version`` if it is a safe directory name, else ProxyModelError saying what is allowed."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise ProxyModelError(
            f"model version {bounded_repr(version)} is not allowed: use 1-128 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return version


@dataclass(frozen=True)
class ProxyModelSpec:
    """Everything needed to rebuild the modules before loading weights.

    ridge_weight: w, the share of a linear ridge-regression proxy in the served proxy,
    ``(1 - w) * (p_coarse + g * p_fine) + w * p_ridge``; 0 = no ridge proxy (and no module).
    """

    encoder_dim: int
    id_dim: int
    clusters: LayerClusters
    projector_hidden: int = 256
    adaptor_hidden: int = 128
    dropout: float = 0.1
    gate_closed: bool = False
    coarse_unit_offsets: bool = True
    ridge_weight: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder_dim": self.encoder_dim,
            "id_dim": self.id_dim,
            "clusters": self.clusters.to_dict(),
            "projector_hidden": self.projector_hidden,
            "adaptor_hidden": self.adaptor_hidden,
            "dropout": self.dropout,
            "gate_closed": self.gate_closed,
            "coarse_unit_offsets": self.coarse_unit_offsets,
            "ridge_weight": self.ridge_weight,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProxyModelSpec:
        """The spec a manifest holds; ProxyModelError naming the key for a bad or odd value."""

        def size(key: str, minimum: int = 1) -> int:
            value = raw[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not minimum <= value <= 1 << 20
            ):
                raise ProxyModelError(f"spec.{key} must be an integer >= {minimum}, got {value!r}")
            return value

        def flag(key: str, default: bool | None = None) -> bool:
            value = raw.get(key, default)
            if not isinstance(value, bool):
                raise ProxyModelError(
                    f"spec.{key} must be true or false, got {bounded_repr(value)}"
                )
            return value

        dropout = finite_number(raw["dropout"], "spec.dropout", ProxyModelError)
        if not 0.0 <= dropout < 1.0:
            raise ProxyModelError(f"spec.dropout must lie in [0, 1), got {dropout}")
        ridge_weight = finite_number(
            raw.get("ridge_weight", 0.0), "spec.ridge_weight", ProxyModelError
        )
        if not 0.0 <= ridge_weight < 1.0:
            raise ProxyModelError(f"spec.ridge_weight must lie in [0, 1), got {ridge_weight}")
        return cls(
            encoder_dim=size("encoder_dim"),
            id_dim=size("id_dim"),
            clusters=LayerClusters.from_dict(raw["clusters"]),
            projector_hidden=size("projector_hidden", 0),  # 0: a linear projector
            adaptor_hidden=size("adaptor_hidden", 0),
            dropout=dropout,
            gate_closed=flag("gate_closed"),
            # manifests written before the regression-trained projector had unit offsets only
            coarse_unit_offsets=flag("coarse_unit_offsets", True),
            # manifests written before the ridge blend serve IDProxy's proxy alone
            ridge_weight=ridge_weight,
        )


@dataclass
class ProxyManifest:
    """Identity and provenance of a trained model.

    content: the content contract of the features it was trained on; None for a model
    trained on features without one (hand-made), which no serving path accepts.
    """

    version: str
    encoder_fingerprint: str
    id_space_fingerprint: str
    spec: ProxyModelSpec
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    content: ContentContract | None = None

    files: dict[str, str] = field(default_factory=dict)  # file name -> SHA-256, set when saved

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "encoder_fingerprint": self.encoder_fingerprint,
            "id_space_fingerprint": self.id_space_fingerprint,
            "content": None if self.content is None else self.content.to_dict(),
            "spec": self.spec.to_dict(),
            "training": self.training,
            "metrics": self.metrics,
            "files": self.files,
        }


class ProxyModel(nn.Module):
    """Content features -> proxy embedding in the ranker's ID space.

    ``forward(global_embedding (B, D_enc), cluster_states (B, K, D_enc)) -> (B, D_id)``:
    ``p = p_coarse + g * p_fine`` (see ``proxy/gate.py`` for the exact gate), blended with the
    linear ridge proxy as ``(1 - w) * p + w * p_ridge`` when ``spec.ridge_weight`` w > 0.
    """

    def __init__(self, spec: ProxyModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.projector = CoarseProjector(
            spec.encoder_dim,
            spec.id_dim,
            spec.projector_hidden,
            spec.dropout,
            unit_offsets=spec.coarse_unit_offsets,
        )
        self.adaptor = FineAdaptor(
            spec.clusters.num_clusters,
            spec.encoder_dim,
            spec.id_dim,
            spec.adaptor_hidden,
            spec.dropout,
        )
        self.gate = ResidualGate(spec.id_dim, spec.adaptor_hidden, closed=spec.gate_closed)
        self.ridge = (
            CoarseProjector(spec.encoder_dim, spec.id_dim, 0, 0.0, unit_offsets=False)
            if spec.ridge_weight > 0
            else None
        )

    def coarse(self, global_embedding: torch.Tensor) -> torch.Tensor:
        """(B, D_enc) -> (B, D_id) Stage 1 proxy."""
        return self.projector(global_embedding)

    def forward(self, global_embedding: torch.Tensor, cluster_states: torch.Tensor) -> torch.Tensor:
        """(B, D_enc), (B, K, D_enc) -> (B, D_id) proxy."""
        proxy = self.projector(global_embedding)
        if not self.gate.closed:
            hidden, fine = self.adaptor(cluster_states)
            proxy = self.gate(proxy, hidden, fine)
        if self.ridge is None:
            return proxy
        weight = self.spec.ridge_weight
        return (1.0 - weight) * proxy + weight * self.ridge(global_embedding)

    @torch.no_grad()
    def predict(
        self, global_embedding: torch.Tensor, cluster_states: torch.Tensor, batch_size: int = 4096
    ) -> torch.Tensor:
        """Proxies in eval mode, batched: (N, D_enc), (N, K, D_enc) -> (N, D_id)."""
        was_training = self.training
        self.eval()
        outputs = [
            self(
                global_embedding[start : start + batch_size],
                cluster_states[start : start + batch_size],
            )
            for start in range(0, len(global_embedding), batch_size)
        ]
        self.train(was_training)
        if not outputs:
            return torch.zeros(0, self.spec.id_dim)
        return torch.cat(outputs)


def save_proxy_model(model: ProxyModel, manifest: ProxyManifest, directory: str | Path) -> Path:
    """Write weights (safetensors) and ``manifest.json`` (with the weights' SHA-256) to
    ``directory``; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().contiguous().clone() for name, t in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"version": manifest.version})
    manifest.spec = model.spec
    manifest.files = file_digests(directory, [WEIGHTS_FILE])
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=1, default=str))
    return directory


def read_proxy_manifest(directory: str | Path) -> ProxyManifest:
    """Read and validate ``manifest.json`` without loading weights.

    Raises :class:`ProxyModelError` naming the file, in one line, for a damaged manifest (not
    JSON, a missing key, a value of the wrong type, NaN, an unsafe version name).
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ProxyModelError(
            f"{directory} holds no ProxyModel: expected {MANIFEST_FILE} (train one with "
            "`idproxy train`)"
        )
    raw = read_json_manifest(path, ProxyModelError)
    if raw.get("format") != FORMAT:
        raise ProxyModelError(
            f"{path} has format {bounded_repr(raw.get('format'))}, expected {FORMAT!r}"
        )
    try:
        for key in ("encoder_fingerprint", "id_space_fingerprint"):
            if not isinstance(raw[key], str):
                raise ProxyModelError(f"{key} must be a string, got {bounded_repr(raw[key])}")
        return ProxyManifest(
            version=check_version_name(raw["version"]),
            encoder_fingerprint=raw["encoder_fingerprint"],
            id_space_fingerprint=raw["id_space_fingerprint"],
            spec=ProxyModelSpec.from_dict(raw["spec"]),
            training=raw.get("training", {}),
            metrics=raw.get("metrics", {}),
            content=None
            if raw.get("content") is None
            else ContentContract.from_dict(raw["content"]),
            files=raw.get("files"),
        )
    except KeyError as missing:
        raise ProxyModelError(f"{path} lacks the key {missing}: save the model again") from None
    except (ProxyModelError, TypeError, ValueError, AttributeError) as problem:
        raise ProxyModelError(f"{path} is damaged: {str(problem)[:300]}") from None


def content_problem(manifest: ProxyManifest, expected: ContentContract) -> str | None:
    """Why ``manifest``'s model cannot serve under the content contract ``expected``, or None.

    One line naming every setting that differs (text fields, template, encoder settings).
    """
    problem = describe_mismatch(manifest.content, expected)
    if problem is None:
        return None
    return f"ProxyModel {manifest.version} was trained under another content contract: {problem}"


def load_proxy_model(
    directory: str | Path,
    expected_encoder_fingerprint: str | None = None,
    expected_id_space_fingerprint: str | None = None,
    expected_content: ContentContract | None = None,
) -> tuple[ProxyModel, ProxyManifest]:
    """Load a saved model, refusing one trained for another encoder, text or ID space."""
    manifest = read_proxy_manifest(directory)
    if (
        expected_encoder_fingerprint is not None
        and manifest.encoder_fingerprint != expected_encoder_fingerprint
    ):
        raise ProxyModelMismatchError(
            f"ProxyModel {manifest.version} in {directory} was trained on encoder "
            f"{manifest.encoder_fingerprint}, but the encoder in use is "
            f"{expected_encoder_fingerprint}: configure the encoder it was trained with, or "
            "re-extract features and retrain"
        )
    if (
        expected_id_space_fingerprint is not None
        and manifest.id_space_fingerprint != expected_id_space_fingerprint
    ):
        raise ProxyModelMismatchError(
            f"ProxyModel {manifest.version} in {directory} targets ID space "
            f"{manifest.id_space_fingerprint}, but the ranker's ID space is "
            f"{expected_id_space_fingerprint}: retrain the ProxyModel against the current ranker"
        )
    if expected_content is not None and (problem := content_problem(manifest, expected_content)):
        raise ProxyModelMismatchError(
            f"{problem} (in {directory}): configure the settings it was trained with, or retrain"
        )
    model = ProxyModel(manifest.spec)
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise ProxyModelError(f"{directory} has a manifest but no {WEIGHTS_FILE}")
    verify_file_digests(
        Path(directory), manifest.files, [WEIGHTS_FILE], ProxyModelError, MANIFEST_FILE
    )
    try:
        state = load_file(str(weights))
        missing, unexpected = model.load_state_dict(state, strict=False)
    except Exception as error:  # safetensors' and torch's own errors: name the file instead
        raise ProxyModelError(
            f"{weights} cannot be loaded ({type(error).__name__}: {str(error)[:200]})"
        ) from None
    if missing or unexpected:
        raise ProxyModelError(
            f"{weights} does not match its manifest: missing {missing}, unexpected {unexpected}"
        )
    bad = [name for name, tensor in state.items() if not torch.isfinite(tensor).all()]
    if bad:
        raise ProxyModelError(f"{weights} holds NaN or inf in {bad[:5]}: retrain or save again")
    model.eval()
    return model, manifest
