"""Turning samples into the ranker's integer inputs: vocabularies and batches.

:class:`FeatureVocab` maps raw ids and categorical values to embedding rows (row 0 is always
padding / unknown). It is saved with the ranker as JSON, so a reloaded ranker reads raw ids the
same way. :class:`RankerInputs` holds one encoded sample table as tensors; ``batch(rows)`` slices
a :class:`RankerBatch` out of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch

from idproxy_stream.data.schema import RecDataset

MAX_CATEGORIES = 6
YEAR_BUCKET_WIDTH = 5


def _index_map(values: Sequence) -> dict:
    return {value: position + 1 for position, value in enumerate(values)}


@dataclass(frozen=True)
class FeatureVocab:
    """Raw values -> embedding rows for every feature the ranker reads (0 = padding/unknown)."""

    item_ids: tuple[int, ...]
    user_ids: tuple[int, ...]
    categories: tuple[str, ...]
    year_buckets: tuple[int, ...]
    user_feature_columns: tuple[str, ...]
    user_feature_values: tuple[tuple[str, ...], ...]

    @classmethod
    def from_dataset(cls, dataset: RecDataset) -> FeatureVocab:
        categories = sorted({c for cats in dataset.items["categories"] for c in cats})
        buckets = sorted({_year_bucket(y) for y in dataset.items["year"]})
        columns = tuple(dataset.user_feature_columns)
        values = tuple(
            tuple(sorted(dataset.users[column].astype(str).unique())) for column in columns
        )
        return cls(
            item_ids=tuple(int(i) for i in np.sort(dataset.items["item_id"].to_numpy())),
            user_ids=tuple(int(u) for u in np.sort(dataset.users["user_id"].to_numpy())),
            categories=tuple(categories),
            year_buckets=tuple(buckets),
            user_feature_columns=columns,
            user_feature_values=values,
        )

    @property
    def num_item_rows(self) -> int:
        return len(self.item_ids) + 1

    @property
    def num_user_rows(self) -> int:
        return len(self.user_ids) + 1

    def item_rows(self, item_ids: np.ndarray) -> np.ndarray:
        """Raw item ids (any shape, -1 = padding) -> embedding rows (0 for padding/unknown)."""
        lookup = np.asarray(self.item_ids, dtype=np.int64)
        flat = np.asarray(item_ids, dtype=np.int64).ravel()
        position = np.searchsorted(lookup, flat)
        position = np.clip(position, 0, len(lookup) - 1)
        found = lookup[position] == flat
        return np.where(found, position + 1, 0).reshape(np.shape(item_ids)).astype(np.int64)

    def user_rows(self, user_ids: np.ndarray) -> np.ndarray:
        lookup = np.asarray(self.user_ids, dtype=np.int64)
        flat = np.asarray(user_ids, dtype=np.int64)
        position = np.clip(np.searchsorted(lookup, flat), 0, len(lookup) - 1)
        return np.where(lookup[position] == flat, position + 1, 0).astype(np.int64)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: dict) -> FeatureVocab:
        return cls(
            item_ids=tuple(int(v) for v in raw["item_ids"]),
            user_ids=tuple(int(v) for v in raw["user_ids"]),
            categories=tuple(raw["categories"]),
            year_buckets=tuple(int(v) for v in raw["year_buckets"]),
            user_feature_columns=tuple(raw["user_feature_columns"]),
            user_feature_values=tuple(tuple(v) for v in raw["user_feature_values"]),
        )


def _year_bucket(year: int) -> int:
    year = int(year)
    return 0 if year <= 0 else year - year % YEAR_BUCKET_WIDTH


@dataclass(frozen=True)
class ItemSideFeatures:
    """Per item row: category rows (N_rows, MAX_CATEGORIES) and year-bucket row (N_rows,)."""

    categories: np.ndarray
    year: np.ndarray

    @classmethod
    def from_dataset(cls, dataset: RecDataset, vocab: FeatureVocab) -> ItemSideFeatures:
        category_index = _index_map(vocab.categories)
        bucket_index = _index_map(vocab.year_buckets)
        categories = np.zeros((vocab.num_item_rows, MAX_CATEGORIES), dtype=np.int64)
        year = np.zeros(vocab.num_item_rows, dtype=np.int64)
        rows = vocab.item_rows(dataset.items["item_id"].to_numpy())
        for row, cats, item_year in zip(
            rows, dataset.items["categories"], dataset.items["year"], strict=True
        ):
            encoded = [category_index.get(c, 0) for c in list(cats)[:MAX_CATEGORIES]]
            categories[row, : len(encoded)] = encoded
            year[row] = bucket_index.get(_year_bucket(item_year), 0)
        return cls(categories=categories, year=year)


@dataclass(frozen=True)
class RankerBatch:
    """One mini-batch of encoded samples.

    Shapes: user (B,), user_features (B, F_u), item (B,), item_categories (B, C),
    item_year (B,), history (B, H) item rows with 0 = padding, label (B,) float32.
    """

    user: torch.Tensor
    user_features: torch.Tensor
    item: torch.Tensor
    item_categories: torch.Tensor
    item_year: torch.Tensor
    history: torch.Tensor
    label: torch.Tensor

    def __len__(self) -> int:
        return int(self.item.shape[0])


@dataclass(frozen=True)
class RankerInputs:
    """A whole encoded sample table; the fields are full-length versions of RankerBatch's."""

    user: torch.Tensor
    user_features: torch.Tensor
    item: torch.Tensor
    item_categories: torch.Tensor
    item_year: torch.Tensor
    history: torch.Tensor
    label: torch.Tensor

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def batch(self, rows: torch.Tensor | slice) -> RankerBatch:
        return RankerBatch(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def subset(self, rows: torch.Tensor | slice) -> RankerInputs:
        """The samples at ``rows`` (index tensor, boolean mask or slice)."""
        return RankerInputs(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    @classmethod
    def concat(cls, parts: Sequence[RankerInputs]) -> RankerInputs:
        """All samples of ``parts``, in order."""
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def batches(
        self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None
    ) -> Iterator[RankerBatch]:
        order = (
            torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        )
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start : start + batch_size])


def encode_samples(
    samples: pd.DataFrame,
    dataset: RecDataset,
    vocab: FeatureVocab,
    side: ItemSideFeatures,
) -> RankerInputs:
    """Encode a split part (interactions + ``history`` column) into tensors."""
    users = dataset.users.set_index("user_id")
    user_ids = samples["user_id"].to_numpy(np.int64)
    feature_columns = []
    for column, values in zip(vocab.user_feature_columns, vocab.user_feature_values, strict=True):
        index = _index_map(values)
        raw = users[column].astype(str).reindex(user_ids).to_numpy()
        feature_columns.append(np.array([index.get(v, 0) for v in raw], dtype=np.int64))
    user_features = (
        np.stack(feature_columns, axis=1)
        if feature_columns
        else np.zeros((len(samples), 0), dtype=np.int64)
    )
    item_rows = vocab.item_rows(samples["item_id"].to_numpy(np.int64))
    history = (
        np.stack(samples["history"].to_list()) if len(samples) else np.zeros((0, 1), dtype=np.int64)
    )
    return RankerInputs(
        user=torch.from_numpy(vocab.user_rows(user_ids)),
        user_features=torch.from_numpy(user_features),
        item=torch.from_numpy(item_rows),
        item_categories=torch.from_numpy(side.categories[item_rows]),
        item_year=torch.from_numpy(side.year[item_rows]),
        history=torch.from_numpy(vocab.item_rows(history)),
        label=torch.from_numpy(samples["label"].to_numpy(np.float32)),
    )
