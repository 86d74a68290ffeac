"""The streaming job: new-item events from Kafka -> checked proxies in the feature store.

Read in this order (see ``docs/stream.md``):

- ``source.py``: the group consumer actor — decode, batch (``batching.py``), backpressure
  (``backpressure.py``), dead letters, offset commits (``offsets.py``), supervision.
- ``worker.py``: encoder + ProxyModel actors, hot model swap.
- ``sink.py``: neighbour check, idempotent durable writes, optional output topic.
- ``pipeline.py``: the driver — Ray, source actors, monitor, metrics (``metrics.py``).
- ``messages.py`` (what actors exchange), ``actors.py`` (start / replace actors),
  ``clients.py`` / ``topics.py`` (Kafka), ``broker.py`` (embedded tansu), ``logs.py``,
  ``status.py``, ``publish.py`` (``idproxy publish``), ``demo.py`` (``make demo``).
"""
