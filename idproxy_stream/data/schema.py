"""The one in-memory shape every dataset loader returns: :class:`RecDataset`.

Loaders (synthetic, MovieLens 100K, MovieLens CSV) differ only in how they fill it;
everything downstream (split, ranker, encoders, training) reads this shape alone.

Tables (pandas DataFrames):

``items`` — one row per item
    item_id (int64), title (str), description (str, "" when none), tags (list[str]),
    categories (list[str], e.g. genres), year (int, 0 when unknown),
    image_uri (str | None, e.g. ``file:///.../123.jpg``), image_bytes (bytes | None,
    inline encoded image, used by the synthetic generator).
``users`` — one row per user
    user_id (int64) plus categorical feature columns named in ``user_feature_columns``
    (stored as strings; the ranker builds vocabularies from them).
``interactions`` — one row per (user, item) event
    user_id (int64), item_id (int64), timestamp (int64, seconds), rating (float32),
    label (int8: 1 = click).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from idproxy_stream.errors import IdProxyError

ITEM_COLUMNS = (
    "item_id",
    "title",
    "description",
    "tags",
    "categories",
    "year",
    "image_uri",
    "image_bytes",
)
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "rating", "label")

DEFAULT_TEXT_FIELDS = ("title", "categories", "tags", "description")


class DatasetError(IdProxyError, ValueError):
    """A dataset on disk is missing, incomplete or malformed; the message says what to fix."""


@dataclass(frozen=True)
class RecDataset:
    """Items with content, users with features, and time-stamped click interactions."""

    name: str
    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    user_feature_columns: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing_items = set(ITEM_COLUMNS) - set(self.items.columns)
        if missing_items:
            raise DatasetError(f"{self.name}: items table lacks columns {sorted(missing_items)}")
        missing_events = set(INTERACTION_COLUMNS) - set(self.interactions.columns)
        if missing_events:
            raise DatasetError(
                f"{self.name}: interactions table lacks columns {sorted(missing_events)}"
            )
        missing_users = ({"user_id"} | set(self.user_feature_columns)) - set(self.users.columns)
        if missing_users:
            raise DatasetError(f"{self.name}: users table lacks columns {sorted(missing_users)}")

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_users(self) -> int:
        return len(self.users)

    def summary(self) -> dict[str, float | int | str]:
        """Counts a README or report can quote."""
        return {
            "name": self.name,
            "items": int(self.num_items),
            "users": int(self.num_users),
            "interactions": len(self.interactions),
            "click_rate": float(self.interactions["label"].mean())
            if len(self.interactions)
            else 0.0,
            "items_with_image": int(
                (self.items["image_uri"].notna() | self.items["image_bytes"].notna()).sum()
            ),
            "items_with_description": int((self.items["description"].str.len() > 0).sum()),
        }


LONG_TEXT_FIELDS = ("description",)
SEGMENT_SEPARATOR = "\n"
# Names the template below in content contracts (encoders/contract.py): bump it whenever
# item_content_text changes what text an item gets, so models trained on the old text are
# refused instead of served with proxies of the new one.
TEXT_TEMPLATE = "item_content_text/1"


def item_content_text(item: dict | pd.Series, fields: Sequence[str] = DEFAULT_TEXT_FIELDS) -> str:
    """The text an encoder reads for one item.

    Short fields (title, categories, tags) share the first line, joined by ". "; each long field
    (``LONG_TEXT_FIELDS``: the description) gets a line of its own, e.g.
    ``"Toy Story (1995). Genres: Animation, Comedy\nA cowboy doll is ..."``. Encoders with
    segment pooling encode each line separately and weigh them equally, so a long plot does not
    drown the title. ``fields`` picks and orders the parts; empty parts are left out.
    """
    short: list[str] = []
    long: list[str] = []
    for name in fields:
        value = item.get(name) if isinstance(item, dict) else item[name]
        if name == "categories" and value is not None and len(value):
            short.append("Genres: " + ", ".join(str(v) for v in value))
        elif name == "tags" and value is not None and len(value):
            short.append("Tags: " + ", ".join(str(v) for v in value))
        elif isinstance(value, str) and value.strip():
            text = " ".join(value.split())  # no line breaks inside a field
            (long if name in LONG_TEXT_FIELDS else short).append(text)
    lines = ([". ".join(short)] if short else []) + long
    return SEGMENT_SEPARATOR.join(lines)
