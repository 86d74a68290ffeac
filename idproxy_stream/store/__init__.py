"""Feature stores for proxies: the ABC, its backends, and the reader's switch-over policy.

- ``base.py``: :class:`FeatureStore` contract, :data:`STORE_BACKENDS` registry, ``build_store``.
- ``sqlite.py`` (embedded default), ``redis.py`` (online), ``parquet.py`` (offline log),
  ``composite.py`` (online + log together).
- ``reader.py``: :class:`ProxyReader`, the ID / proxy / fallback choice per item.

Backends load lazily: importing this package imports neither redis nor pyarrow.
"""

from idproxy_stream.store.base import (
    STORE_BACKENDS,
    FeatureStore,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    build_store,
    store_class,
)

__all__ = [
    "STORE_BACKENDS",
    "FeatureStore",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "build_store",
    "store_class",
]
