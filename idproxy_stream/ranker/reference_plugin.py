"""The reference ranker behind the plugin interface: the smallest complete adapter factory.

``ranker.adapter: "idproxy_stream.ranker.reference_plugin:reference_ranker"`` gives the same
ranker as leaving ``ranker.adapter`` unset, but through the path a user's ranker takes:
``ranker.adapter_settings`` are :class:`~idproxy_stream.config.RankerConfig` fields (the seed is
the run's), ``ranker.checkpoint`` is a folder; it is loaded when it holds a saved ranker, else the
ranker is trained on the context's warm samples and saved there.
"""

from __future__ import annotations

from idproxy_stream.config import RankerConfig
from idproxy_stream.ranker.din import DinRanker
from idproxy_stream.ranker.plugins import AdapterContext, RankerPluginError
from idproxy_stream.ranker.training import MANIFEST_FILE, load_ranker, save_ranker, train_ranker


def reference_ranker(context: AdapterContext) -> DinRanker:
    """A :class:`DinRanker` loaded from ``context.checkpoint`` or trained (and saved there)."""
    checkpoint = context.checkpoint
    if checkpoint is not None and (checkpoint / MANIFEST_FILE).is_file():
        ranker = load_ranker(checkpoint)
        if ranker.vocab != context.vocab:
            raise RankerPluginError(
                f"ranker.checkpoint = {checkpoint} was trained on another catalogue (its item "
                "vocabulary differs): point it at an empty folder to train a new one"
            )
        return ranker
    config = RankerConfig.model_validate({**context.settings, "seed": context.seed})
    ranker, _ = train_ranker(context.train, context.valid, config, context.vocab)
    if checkpoint is not None:
        save_ranker(ranker, checkpoint)
    return ranker
