"""The stream's worker held to one model version, so a whole backfill uses a single model.

The stream's :class:`~idproxy_stream.stream.worker.ProxyWorker` follows the registry's
``LATEST``; a backfill names its version once (``backfill.model_version``, or ``LATEST`` as it
was when the run started) and keeps it even if a newer version is published meanwhile. That also
lets a version be backfilled before it serves.
"""

from __future__ import annotations

from idproxy_stream.config import AppConfig
from idproxy_stream.proxy.registry import check_version_name, load_version
from idproxy_stream.stream.worker import ProxyWorker


class PinnedVersionWorker(ProxyWorker):
    """A :class:`ProxyWorker` that loads ``version`` and never swaps it.

    Raises the registry's errors when the version is missing or was trained for another
    encoder or ID space (``ProxyModelError`` / ``ProxyModelMismatchError``).

    Example::

        worker = PinnedVersionWorker(config, "v20260301")
        worker.encode(items).model_version        # "v20260301"
    """

    def __init__(self, config: AppConfig, version: str, setup_logging: bool = True) -> None:
        self.pinned_version = check_version_name(version)
        super().__init__(config, setup_logging)

    def check_for_new_model(self, force: bool = False) -> bool:
        """Load the pinned version once; later calls keep it."""
        if self.manifest is not None:
            return False
        model, manifest = load_version(
            self.registry,
            self.pinned_version,
            expected_encoder_fingerprint=self.encoder.fingerprint,
            expected_id_space_fingerprint=self.id_space_fingerprint,
        )
        model.eval()
        self.model, self.manifest = model, manifest
        return True
