"""Backfill: recompute proxies with one model version for a catalogue or a Kafka offset range.

The stream computes a proxy when an item is published; a backfill computes them again — after
training a new model version, for items published before the stream ran, or to redo a range of
the topic — with the stream's own worker and sink, into the same stores. Rows are keyed by
``(item_id, model_version)``, so a backfill adds the new version's rows beside the old ones and
the readers switch with ``reader.serving_model_version``.

- ``catalogue.py``: every item of the configured dataset.
- ``kafka_range.py``: the records of a bounded offset range of a topic (kafka-python).
- ``runner.py``: the actor pool (the stream's workers pinned to the version, one sink) and the
  report.
"""
