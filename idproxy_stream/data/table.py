"""The generic table format (``data.name: table``): an items table and an interactions table.

Both are Parquet or CSV files (chosen by the suffix); ``docs/data.md`` is the user-facing
description and :mod:`idproxy_stream.data.export` writes the format from every other loader.

items (one row per item):
    ``item_id`` integer, unique; ``title`` string; ``created_at`` (timestamp, ISO-8601 string or
    integer Unix seconds); optional ``description`` string, ``tags`` and ``categories`` (a list of
    strings in Parquet, ``|``-separated in CSV), ``year`` integer, ``image_uri`` string, and the
    categorical ``data.table.side_columns``.
interactions (one row per event):
    ``user_id`` and ``item_id`` integers, ``timestamp`` (as ``created_at``); ``label`` 0/1, or
    ``rating`` numeric with ``data.click_threshold`` (``data.table.label_column: rating``); the
    categorical ``data.table.user_feature_columns``.

Every problem is one :class:`DatasetError` line naming the file, the column and the first
offending row (1-based data row; a CSV's header is line 1, so row N is line N + 1).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from idproxy_stream.config import TableDataConfig
from idproxy_stream.data.movielens import _user_time_order
from idproxy_stream.data.schema import DatasetError, RecDataset

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = (".parquet", ".csv")
LIST_SEPARATOR = "|"
ITEM_REQUIRED = ("item_id", "title", "created_at")
ITEM_OPTIONAL_TEXT = ("description", "image_uri")
ITEM_LIST_COLUMNS = ("tags", "categories")
INTERACTION_REQUIRED = ("user_id", "item_id", "timestamp")


def table_path(root: Path, name: Path) -> Path:
    """``name`` under ``root`` unless it is absolute."""
    return name if name.is_absolute() else root / name


def read_table_file(path: Path, setting: str) -> pa.Table:
    """A Parquet or CSV file as an Arrow table; one-line :class:`DatasetError` otherwise."""
    if path.suffix not in TABLE_SUFFIXES:
        raise DatasetError(f"{setting} = {path}: use a .parquet or .csv file")
    if not path.is_file():
        raise DatasetError(f"{setting} = {path} does not exist: write it or fix the path")
    try:
        if path.suffix == ".parquet":
            return pq.read_table(path)
        return pa_csv.read_csv(path)
    except (pa.ArrowInvalid, OSError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetError(
            f"{path}: not a readable {path.suffix[1:]} table ({first_line})"
        ) from None


class TableChecker:
    """Column checks of one file; every error names the file, the column and the row."""

    def __init__(self, path: Path, table: pa.Table) -> None:
        self.path = path
        self.table = table

    def fail(self, column: str, row: int | None, problem: str) -> DatasetError:
        where = f"column '{column}'" + (f" row {row + 1}" if row is not None else "")
        return DatasetError(f"{self.path}: {where}: {problem}")

    def has(self, column: str) -> bool:
        return column in self.table.column_names

    def require(self, columns: Sequence[str]) -> None:
        for column in columns:
            if not self.has(column):
                present = ", ".join(self.table.column_names)
                raise self.fail(column, None, f"missing (the file has: {present}); add it")

    def _no_nulls(self, column: str, values: pa.ChunkedArray) -> None:
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise self.fail(column, row, "empty value; every row needs one")

    def _first_bad(self, column: str, values: pa.ChunkedArray, cast_to: pa.DataType) -> int:
        """Row of the first value of a string column that does not parse as ``cast_to``."""
        for row, value in enumerate(values.to_pylist()):
            try:
                pa.array([value]).cast(cast_to)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return row
        return 0

    def integers(self, column: str) -> np.ndarray:
        """(N,) int64 of an integer column without nulls."""
        values = self.table.column(column)
        self._no_nulls(column, values)
        if pa.types.is_integer(values.type):
            return values.to_numpy().astype(np.int64)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            row = self._first_bad(column, values, pa.int64())
            raise self.fail(column, row, f"{values[row].as_py()!r} is not an integer")
        if pa.types.is_floating(values.type):
            floats = values.to_numpy()
            fractional = np.flatnonzero(floats != np.round(floats))
            if len(fractional) == 0:
                return floats.astype(np.int64)
            raise self.fail(
                column, int(fractional[0]), f"{floats[fractional[0]]} is not an integer"
            )
        raise self.fail(column, None, f"must hold integers, found {values.type}")

    def seconds(self, column: str) -> np.ndarray:
        """(N,) int64 Unix seconds of a timestamp, ISO-8601 string or integer column."""
        values = self.table.column(column)
        self._no_nulls(column, values)
        if pa.types.is_integer(values.type):
            return values.to_numpy().astype(np.int64)
        if pa.types.is_timestamp(values.type) or pa.types.is_date(values.type):
            return _unix_seconds(pd.to_datetime(values.to_pandas(), utc=True))
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            texts = values.to_pandas().str.strip()
            digits = texts.str.fullmatch(r"-?\d+")
            parsed = pd.to_datetime(
                texts.where(~digits), utc=True, errors="coerce", format="ISO8601"
            )
            as_seconds = pd.to_datetime(pd.to_numeric(texts.where(digits)), unit="s", utc=True)
            parsed = parsed.where(~digits, as_seconds)
            bad = np.flatnonzero(parsed.isna().to_numpy())
            if len(bad):
                problem = f"{texts.iloc[bad[0]]!r} is not an ISO-8601 time or Unix seconds"
                raise self.fail(column, int(bad[0]), problem)
            return _unix_seconds(parsed)
        raise self.fail(
            column,
            None,
            f"must hold timestamps, ISO-8601 strings or Unix seconds, not {values.type}",
        )

    def strings(self, column: str, required: bool) -> list[str | None]:
        """The column as Python strings (None for empty cells unless ``required``)."""
        values = self.table.column(column)
        if required:
            self._no_nulls(column, values)
        if pa.types.is_null(values.type):
            return [None] * len(values)
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            if pa.types.is_integer(values.type) or pa.types.is_boolean(values.type):
                values = values.cast(pa.string())  # CSV inference: "1", "2" categories
            else:
                raise self.fail(column, None, f"must hold strings, found {values.type}")
        return values.to_pylist()

    def string_lists(self, column: str) -> list[list[str]]:
        """A list<string> column, or a ``|``-separated string column, as lists."""
        values = self.table.column(column)
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            value_type = values.type.value_type
            if not (pa.types.is_string(value_type) or pa.types.is_null(value_type)):
                raise self.fail(column, None, f"must hold lists of strings, found {values.type}")
            return [list(v) if v is not None else [] for v in values.to_pylist()]
        texts = self.strings(column, required=False)
        return [
            [part.strip() for part in text.split(LIST_SEPARATOR) if part.strip()] if text else []
            for text in texts
        ]

    def binary_labels(self, column: str) -> np.ndarray:
        """(N,) int8 of a 0/1 (or boolean) column."""
        values = self.table.column(column)
        self._no_nulls(column, values)
        if pa.types.is_boolean(values.type):
            return values.to_numpy(zero_copy_only=False).astype(np.int8)
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
            raise self.fail(column, None, f"must hold 0/1 labels, found {values.type}")
        numbers = values.to_numpy()
        bad = np.flatnonzero((numbers != 0) & (numbers != 1))
        if len(bad):
            problem = (
                f"label {numbers[bad[0]]} is not 0 or 1 (for ratings set "
                "data.table.label_column: rating and data.click_threshold)"
            )
            raise self.fail(column, int(bad[0]), problem)
        return numbers.astype(np.int8)

    def numbers(self, column: str) -> np.ndarray:
        """(N,) float32 of a numeric column without nulls."""
        values = self.table.column(column)
        self._no_nulls(column, values)
        if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
            return values.to_numpy().astype(np.float32)
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            row = self._first_bad(column, values, pa.float64())
            raise self.fail(column, row, f"{values[row].as_py()!r} is not a number")
        raise self.fail(column, None, f"must hold numbers, found {values.type}")


def _unix_seconds(stamps: pd.Series) -> np.ndarray:
    """(N,) int64 seconds since the epoch of UTC times, whatever pandas' time resolution."""
    epoch = pd.Timestamp(0, tz="UTC")
    return ((stamps - epoch) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def _first_duplicate(ids: np.ndarray) -> tuple[int, int] | None:
    """(row of the first repeat, row of its first occurrence), or None when unique."""
    _, first_index, inverse = np.unique(ids, return_index=True, return_inverse=True)
    repeats = np.flatnonzero(first_index[inverse] != np.arange(len(ids)))
    if len(repeats) == 0:
        return None
    row = int(repeats[0])
    return row, int(first_index[inverse[row]])


def read_items_table(path: Path, config: TableDataConfig) -> pd.DataFrame:
    """The items file as the ``RecDataset.items`` frame (plus ``created_at`` and side columns)."""
    checker = TableChecker(path, read_table_file(path, "data.table.items"))
    checker.require([*ITEM_REQUIRED, *config.side_columns])
    count = checker.table.num_rows
    item_ids = checker.integers("item_id")
    duplicate = _first_duplicate(item_ids)
    if duplicate is not None:
        row, first = duplicate
        raise checker.fail(
            "item_id", row, f"duplicate item id {item_ids[row]} (first at row {first + 1})"
        )
    created = checker.seconds("created_at")
    frame = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": pd.Series(checker.strings("title", required=True), dtype=object),
            "created_at": pd.to_datetime(created, unit="s", utc=True),
        }
    )
    for column in ITEM_OPTIONAL_TEXT:
        values = checker.strings(column, required=False) if checker.has(column) else [None] * count
        if column == "description":
            values = [v or "" for v in values]
        frame[column] = pd.Series(values, dtype=object)
    for column in ITEM_LIST_COLUMNS:
        lists = checker.string_lists(column) if checker.has(column) else [[] for _ in range(count)]
        frame[column] = pd.Series(lists, dtype=object)
    frame["year"] = checker.integers("year") if checker.has("year") else np.zeros(count, np.int64)
    frame["image_bytes"] = pd.Series([None] * count, dtype=object)
    for column in config.side_columns:
        frame[column] = pd.Series(
            [v or "" for v in checker.strings(column, required=False)], dtype=object
        )
    return frame.sort_values("item_id", kind="stable").reset_index(drop=True)


def read_interactions_table(
    path: Path, config: TableDataConfig, click_threshold: float, item_ids: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interactions sorted by user and time, users with their latest feature values)."""
    checker = TableChecker(path, read_table_file(path, "data.table.interactions"))
    checker.require([*INTERACTION_REQUIRED, config.label_column, *config.user_feature_columns])
    users = checker.integers("user_id")
    items = checker.integers("item_id")
    timestamps = checker.seconds("timestamp")
    unknown = np.flatnonzero(~np.isin(items, item_ids))
    if len(unknown):
        raise checker.fail(
            "item_id",
            int(unknown[0]),
            f"item {items[unknown[0]]} is not in the items table ({len(unknown)} such rows)",
        )
    if config.label_column == "label":
        labels = checker.binary_labels("label")
        ratings = labels.astype(np.float32)
    else:
        ratings = checker.numbers("rating")
        labels = (ratings >= click_threshold).astype(np.int8)
    features = {
        column: np.asarray(
            [v if v is not None else "" for v in checker.strings(column, required=False)],
            dtype=object,
        )
        for column in config.user_feature_columns
    }
    order = _user_time_order(users, timestamps)
    interactions = pd.DataFrame(
        {
            "user_id": users[order],
            "item_id": items[order],
            "timestamp": timestamps[order],
            "rating": ratings[order],
            "label": labels[order],
        }
    )
    # rows are sorted by (user, time): a user's last row holds their latest feature values
    sorted_users = users[order]
    last = np.flatnonzero(np.r_[sorted_users[1:] != sorted_users[:-1], True]) if len(order) else []
    user_frame = pd.DataFrame({"user_id": sorted_users[last].astype(np.int64)})
    for column, values in features.items():
        user_frame[column] = pd.Series(values[order][last], dtype=str)
    return interactions, user_frame


def load_table_dataset(
    root: str | Path, config: TableDataConfig, click_threshold: float = 4.0
) -> RecDataset:
    """The :class:`RecDataset` of an items + interactions table pair under ``root``.

    Raises :class:`DatasetError` (one line: file, column, row) for a missing file or column, a
    wrong type, an empty required value, a duplicate item id, a label other than 0/1, or an
    interaction naming an item the items table does not hold.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data.path = {root} is not a folder: pass the folder of the tables")
    items_path = table_path(root, config.items)
    interactions_path = table_path(root, config.interactions)
    items = read_items_table(items_path, config)
    interactions, users = read_interactions_table(
        interactions_path, config, click_threshold, items["item_id"].to_numpy()
    )
    dataset = RecDataset(
        name="table",
        items=items,
        users=users,
        interactions=interactions,
        user_feature_columns=tuple(config.user_feature_columns),
        metadata={
            "format": "table",
            "items_path": str(items_path),
            "interactions_path": str(interactions_path),
            "label_column": config.label_column,
            "click_threshold": click_threshold,
            "side_columns": list(config.side_columns),
        },
    )
    logger.info("loaded %s", dataset.summary())
    return dataset
