"""Content encoders: an item's text (and image) -> a global embedding and per-layer states.

Read in this order:

- ``base.py``: :class:`ContentItem`, :class:`EncoderOutput` and the :class:`ContentEncoder`
  protocol every encoder follows; ``registry.py`` builds one from ``EncoderConfig.kind``.
- ``text.py`` (any Hugging Face BERT-family encoder, default the packaged MiniLM) and
  ``internvl.py`` (InternVL, transformers-native) implement it, as does ``text_image.py``
  (MiniLM text + pretrained EfficientNet-Lite0 image features from ``vision.py``, late
  fusion); ``pooling.py`` holds the masked token pooling they share and ``checkpoints.py``
  resolves and fingerprints weights.
- ``layers.py``: grouping the L layer states into K contiguous clusters.
- ``images.py``: turning a user's image reference into a checked, decoded RGB image.
- ``features.py``, ``extract.py``, ``ray_extract.py``: batch feature extraction to Parquet.
- ``tiny_internvl.py``: a tiny random InternVL checkpoint for tests and benchmarks.
"""
