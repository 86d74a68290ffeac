"""Batch feature extraction in one process: a catalogue's items -> a :class:`FeatureTable`.

Items are rows of the ``RecDataset.items`` table (see ``data/schema.py``). Each item's text is
``item_content_text(row, text_fields)``; its image is ``image_bytes`` when present, else
``image_uri``, read through :func:`~idproxy_stream.encoders.images.load_image` — but only for
encoders that read images (``reads_images``; the text encoder does not).

An item whose image fails (missing, outside the allowed roots, a bomb, undecodable ...) is
not dropped: it is encoded from its text alone and its ``image_error`` column holds the
failure's reason code, so a cold-start item still gets features and the failure is visible.

Items are encoded in order of text length (output rows keep the input order), so batches
pad little. When no layer clusters are given, a calibration sample of
``LayerClusterConfig.calibration_size`` items is encoded first and the clusters are fit on
it; those items' outputs are reused, not encoded twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from idproxy_stream.config import ImageInputConfig, LayerClusterConfig
from idproxy_stream.data.schema import DEFAULT_TEXT_FIELDS, item_content_text
from idproxy_stream.encoders.base import ContentEncoder, ContentItem, EncoderOutput
from idproxy_stream.encoders.contract import ContentContract, encoder_contract
from idproxy_stream.encoders.features import FeatureTable, concat_feature_tables
from idproxy_stream.encoders.images import ImageInputError, load_image
from idproxy_stream.encoders.layers import LayerClusters, fit_layer_clusters, pool_layer_clusters
from idproxy_stream.progress import ProgressLog

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]


def content_frame(
    items: pd.DataFrame, text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS
) -> pd.DataFrame:
    """``items`` table -> one row per item with ``item_id, text, image_uri, image_bytes``."""
    missing = {"item_id", "image_uri", "image_bytes", *text_fields} - set(items.columns)
    if missing:
        raise ValueError(f"items table lacks columns {sorted(missing)} needed for encoding")
    texts = [item_content_text(row, text_fields) for row in items.to_dict("records")]
    return pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy(dtype=np.int64),
            "text": texts,
            "image_uri": items["image_uri"].to_numpy(dtype=object),
            "image_bytes": items["image_bytes"].to_numpy(dtype=object),
        }
    )


def _image_reference(image_uri: object, image_bytes: object) -> str | bytes | None:
    if isinstance(image_bytes, bytes | bytearray | memoryview) and len(image_bytes):
        return bytes(image_bytes)
    if isinstance(image_uri, str) and image_uri:
        return image_uri
    return None


def content_items(
    rows: pd.DataFrame, image_config: ImageInputConfig, read_images: bool
) -> tuple[list[ContentItem], list[str | None]]:
    """Content frame rows -> encoder inputs and, per item, the image failure's reason or None."""
    items: list[ContentItem] = []
    errors: list[str | None] = []
    for text, image_uri, image_bytes in zip(
        rows["text"], rows["image_uri"], rows["image_bytes"], strict=True
    ):
        reference = _image_reference(image_uri, image_bytes) if read_images else None
        image, error = None, None
        if reference is not None:
            try:
                image = load_image(reference, image_config)
            except ImageInputError as failure:
                error = failure.reason
                logger.debug("image ignored, encoding text only: %s", failure)
        items.append(ContentItem(text=text, image=image))
        errors.append(error)
    return items, errors


def encode_rows(
    encoder: ContentEncoder, rows: pd.DataFrame, image_config: ImageInputConfig
) -> tuple[EncoderOutput, list[str | None]]:
    """Encode one batch of content rows; returns the output and per-item image failures."""
    items, errors = content_items(rows, image_config, getattr(encoder, "reads_images", True))
    return encoder.encode(items), errors


def feature_rows(
    encoder: ContentEncoder,
    item_ids: np.ndarray,
    output: EncoderOutput,
    clusters: LayerClusters,
    image_errors: Sequence[str | None],
    content: ContentContract | None = None,
) -> FeatureTable:
    """One batch's encoder output as feature rows (layer states pooled by ``clusters``).

    ``content``: the contract the rows were computed under (text fields + encoder settings).
    """
    truncated = output.truncated or (False,) * len(item_ids)
    return FeatureTable(
        item_ids=np.asarray(item_ids, dtype=np.int64),
        global_embedding=output.global_embedding.numpy().astype(np.float32, copy=False),
        cluster_states=pool_layer_clusters(output.layer_states, clusters).numpy(),
        clusters=clusters,
        encoder_fingerprint=encoder.fingerprint,
        image_errors=np.array(list(image_errors), dtype=object),
        text_truncated=np.asarray(truncated, dtype=bool),
        content=content,
    )


def batches(frame: pd.DataFrame, batch_size: int) -> Iterator[pd.DataFrame]:
    """Consecutive slices of at most ``batch_size`` rows."""
    for start in range(0, len(frame), batch_size):
        yield frame.iloc[start : start + batch_size]


def by_text_length(content: pd.DataFrame) -> pd.DataFrame:
    """Content rows ordered by text length (stable): each batch then pads to a similar length,
    which on catalogues with a few long descriptions saves most of the padded compute."""
    order = np.argsort(content["text"].str.len().to_numpy(), kind="stable")
    return content.iloc[order]


def calibration_positions(num_items: int, layer_config: LayerClusterConfig) -> np.ndarray:
    """Sorted row positions of the calibration sample (all rows when fewer than its size)."""
    size = min(num_items, layer_config.calibration_size)
    generator = np.random.default_rng(layer_config.seed)
    return np.sort(generator.choice(num_items, size=size, replace=False))


EncodedRows = tuple[pd.DataFrame, EncoderOutput, list[str | None]]


def encode_calibration_sample(
    encoder: ContentEncoder,
    content: pd.DataFrame,
    layer_config: LayerClusterConfig,
    batch_size: int,
    image_config: ImageInputConfig,
) -> tuple[np.ndarray, list[EncodedRows], LayerClusters]:
    """Encode a calibration sample of ``content`` and fit layer clusters on its states.

    Returns the sample's row positions, its encoded batches (for reuse) and the clusters.
    """
    positions = calibration_positions(len(content), layer_config)
    encoded = [
        (rows, *encode_rows(encoder, rows, image_config))
        for rows in batches(by_text_length(content.iloc[positions]), batch_size)
    ]
    states = torch.cat([output.layer_states for _, output, _ in encoded])
    clusters = fit_layer_clusters(states, layer_config.num_clusters, layer_config.similarity)
    return positions, encoded, clusters


def fit_clusters_on_content(
    encoder: ContentEncoder,
    content: pd.DataFrame,
    layer_config: LayerClusterConfig,
    batch_size: int,
    image_config: ImageInputConfig,
) -> LayerClusters:
    """Layer clusters fit on a calibration sample of ``content`` rows."""
    return encode_calibration_sample(encoder, content, layer_config, batch_size, image_config)[2]


def extract_features(
    encoder: ContentEncoder,
    items: pd.DataFrame,
    clusters: LayerClusters | None = None,
    batch_size: int = 64,
    text_fields: Sequence[str] = DEFAULT_TEXT_FIELDS,
    image_config: ImageInputConfig | None = None,
    layer_config: LayerClusterConfig | None = None,
    progress: ProgressCallback | None = None,
) -> FeatureTable:
    """Encode every item of ``items`` (the ``RecDataset.items`` table) into a FeatureTable.

    Rows come back in the order of ``items``. ``clusters=None`` fits them first on a
    calibration sample (``layer_config``). ``progress`` is called with each batch's size.
    The table records its content contract: the encoder's settings and ``text_fields``.
    """
    image_config = image_config or ImageInputConfig()
    layer_config = layer_config or LayerClusterConfig()
    contract = encoder_contract(encoder, text_fields)
    content = content_frame(items, text_fields)
    if content.empty:
        raise ValueError("no items to encode")
    parts: list[FeatureTable] = []
    done = np.zeros(len(content), dtype=bool)
    logged = ProgressLog(logger, "encode", total=len(content), unit="items")
    if clusters is None:
        positions, encoded, clusters = encode_calibration_sample(
            encoder, content, layer_config, batch_size, image_config
        )
        for rows, output, errors in encoded:
            item_ids = rows["item_id"].to_numpy()
            parts.append(feature_rows(encoder, item_ids, output, clusters, errors, contract))
            logged.advance(len(rows))
            if progress is not None:
                progress(len(rows))
        done[positions] = True
    for rows in batches(by_text_length(content[~done]), batch_size):
        output, errors = encode_rows(encoder, rows, image_config)
        item_ids = rows["item_id"].to_numpy()
        parts.append(feature_rows(encoder, item_ids, output, clusters, errors, contract))
        logged.advance(len(rows))
        if progress is not None:
            progress(len(rows))
    table = concat_feature_tables(parts)
    order = pd.Index(table.item_ids).get_indexer(pd.unique(content["item_id"]))
    return take_rows(table, order)


def take_rows(table: FeatureTable, positions: np.ndarray) -> FeatureTable:
    """The rows of ``table`` at ``positions``, in that order."""
    return FeatureTable(
        item_ids=table.item_ids[positions],
        global_embedding=table.global_embedding[positions],
        cluster_states=table.cluster_states[positions],
        clusters=table.clusters,
        encoder_fingerprint=table.encoder_fingerprint,
        image_errors=table.image_errors[positions],
        text_truncated=table.text_truncated[positions],
        content=table.content,
    )
