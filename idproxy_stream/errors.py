"""The package's root exception: every error a user can cause is an :class:`IdProxyError`.

Each module keeps its own specific subclasses (``ConfigError``, ``DatasetError``,
``ProxyModelError`` ...) whose messages name the setting or file and what to fix; callers that
only want to report a failure catch this one type. The subclasses also keep the builtin base
they always had (``ValueError`` or ``RuntimeError``), so existing ``except`` clauses still hold.
"""

from __future__ import annotations


class IdProxyError(Exception):
    """Root of every error idproxy_stream raises on purpose."""
