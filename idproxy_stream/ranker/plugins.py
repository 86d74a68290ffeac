"""Rankers by import path: ``ranker.adapter: "package.module:factory"``.

The factory is called with one :class:`AdapterContext` and returns a
:class:`~idproxy_stream.ranker.adapter.RankerAdapter`; ``docs/ranker-adapter.md`` is the page a
ranker owner implements from. Every mistake (a path of the wrong form, a module that does not
import, a missing or non-callable factory, a factory that raises or returns something else, an ID
table of the wrong shape) is one :class:`RankerPluginError` line naming ``ranker.adapter``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idproxy_stream.config import RankerConfig
from idproxy_stream.errors import IdProxyError
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import FeatureVocab, RankerInputs

DOCS = "docs/ranker-adapter.md"


class RankerPluginError(IdProxyError, ValueError):
    """``ranker.adapter`` names no usable factory, or the factory's ranker breaks the protocol."""


@dataclass(frozen=True)
class AdapterContext:
    """What a factory gets to build (or load) its ranker.

    settings: ``ranker.adapter_settings`` as given.
    checkpoint: ``ranker.checkpoint`` (None when unset); the factory decides what it holds.
    vocab: raw ids <-> the rows every :class:`~idproxy_stream.ranker.inputs.RankerBatch` carries
        (row 0 = padding); ``id_embedding_table()`` must be indexed by these rows.
    train, valid: the warm split's encoded samples, for a factory that trains when its checkpoint
        does not exist yet (a production ranker ignores them).
    seed: the run's seed (``ranker.seed``, or the evaluation seed).
    items: the catalogue's items frame (``RecDataset.items``), for side features the batch lacks.
    """

    settings: Mapping[str, Any]
    checkpoint: Path | None
    vocab: FeatureVocab
    train: RankerInputs
    valid: RankerInputs
    seed: int = 0
    items: Any = field(default=None, repr=False)


AdapterFactory = Callable[[AdapterContext], RankerAdapter]


def load_factory(import_path: str) -> AdapterFactory:
    """The callable ``import_path`` (``"package.module:factory"``) names."""
    setting = f"ranker.adapter = {import_path!r}"
    module_name, colon, attribute = import_path.partition(":")
    if not colon or not module_name or not attribute:
        raise RankerPluginError(f"{setting}: expected 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RankerPluginError(
            f"{setting}: cannot import module {module_name!r} ({type(error).__name__}: {error}); "
            "install it or fix the path"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise RankerPluginError(f"{setting}: module {module_name!r} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise RankerPluginError(
            f"{setting}: {attribute!r} is a {type(target).__name__}, not a callable factory"
        )
    return target


def check_adapter(adapter: object, import_path: str, vocab: FeatureVocab) -> RankerAdapter:
    """``adapter`` if it implements the protocol with an ID table of ``vocab``'s rows."""
    setting = f"ranker.adapter = {import_path!r}"
    if not isinstance(adapter, RankerAdapter):
        raise RankerPluginError(
            f"{setting}: the factory returned a {type(adapter).__name__}, not a RankerAdapter "
            f"(id_embedding_dim, item_id_embedding, id_embedding_table, forward; see {DOCS})"
        )
    table = adapter.id_embedding_table()
    expected = (vocab.num_item_rows, adapter.id_embedding_dim)
    if tuple(getattr(table, "shape", ())) != expected:
        raise RankerPluginError(
            f"{setting}: id_embedding_table() has shape {tuple(getattr(table, 'shape', ()))}, "
            f"expected {expected} (one row per item row of the batches, row 0 = padding; "
            f"see {DOCS})"
        )
    return adapter


def build_adapter(config: RankerConfig, context: AdapterContext) -> RankerAdapter:
    """The plugin ranker ``config.adapter`` names, built with ``context`` and checked."""
    if config.adapter is None:
        raise RankerPluginError("ranker.adapter is not set: the reference ranker is used")
    factory = load_factory(config.adapter)
    try:
        adapter = factory(context)
    except IdProxyError:
        raise
    except Exception as error:  # the factory is user code: its failure is one line too
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise RankerPluginError(
            f"ranker.adapter = {config.adapter!r}: the factory raised "
            f"{type(error).__name__}: {first_line}"
        ) from error
    return check_adapter(adapter, config.adapter, context.vocab)


def freeze(ranker: RankerAdapter) -> RankerAdapter:
    """``ranker`` with gradients off and in eval mode (where it is a torch module)."""
    for parameter in ranker.parameters() if hasattr(ranker, "parameters") else ():
        parameter.requires_grad_(False)
    if hasattr(ranker, "eval"):
        ranker.eval()
    return ranker
