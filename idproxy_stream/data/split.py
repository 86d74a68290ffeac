"""Cold-start split (CVAR / Meta-Embedding protocol) with leak-free behaviour histories.

Items are grouped by their number of interactions in the whole log:

- **warm**: more than ``warm_min_interactions``; the ranker trains on their samples only
  (randomly split into train / valid / test with a fixed seed);
- **cold**: between ``cold_min`` and ``cold_max``; per item, samples sorted by time, the first
  ``warmup_size`` form warm-up set a, the next b, the next c, and the rest is the cold test set;
- **rare**: fewer than ``cold_min``; the ranker never trains on them, but their logged clicks
  (histories over warm items only) may supervise content-to-ID mappings, since these items are
  neither in the ranker's training data nor in the cold evaluation.

Every sample carries the user's behaviour history: up to ``history_length`` previously *clicked*
items with a strictly earlier timestamp (never the future, never the same second). Warm samples'
histories hold warm items only, so no cold item reaches the ranker's training data; cold samples'
histories hold warm and cold items (a cold item's embedding there comes from the method under
evaluation through the ranker's override hook).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from idproxy_stream.config import SplitConfig
from idproxy_stream.data.schema import DatasetError, RecDataset

HISTORY_PAD = -1
SPLIT_PARTS = (
    "warm_train",
    "warm_valid",
    "warm_test",
    "cold_a",
    "cold_b",
    "cold_c",
    "cold_test",
    "rare",
)


@dataclass(frozen=True)
class ColdStartSplit:
    """Interaction samples of every part, each with a ``history`` column.

    Each part is a DataFrame with the interaction columns plus ``history``: an int64 array of
    shape (history_length,) per row holding raw item ids, oldest first, left-padded with -1.
    """

    config: SplitConfig
    warm_items: np.ndarray
    cold_items: np.ndarray
    rare_items: np.ndarray
    parts: dict[str, pd.DataFrame]

    @property
    def warm_train(self) -> pd.DataFrame:
        return self.parts["warm_train"]

    @property
    def warm_valid(self) -> pd.DataFrame:
        return self.parts["warm_valid"]

    @property
    def warm_test(self) -> pd.DataFrame:
        return self.parts["warm_test"]

    @property
    def cold_test(self) -> pd.DataFrame:
        return self.parts["cold_test"]

    def cold_warmup(self, stage: str) -> pd.DataFrame:
        """Warm-up rows seen by stage ``"a"``, ``"b"`` or ``"c"`` alone (not cumulative)."""
        return self.parts[f"cold_{stage}"]

    def counts(self) -> dict[str, int]:
        """Item and sample counts per part, for the README and reports."""
        counts = {
            "warm_items": len(self.warm_items),
            "cold_items": len(self.cold_items),
            "rare_items": len(self.rare_items),
        }
        counts.update({f"{name}_samples": len(frame) for name, frame in self.parts.items()})
        return counts

    def save(self, directory: str | Path) -> None:
        """Write every part as Parquet plus a JSON manifest."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, frame in self.parts.items():
            table = pa.Table.from_pandas(_with_list_history(frame), preserve_index=False)
            pq.write_table(table, directory / f"{name}.parquet")
        manifest = {
            "config": self.config.model_dump(mode="json"),
            "warm_items": self.warm_items.tolist(),
            "cold_items": self.cold_items.tolist(),
            "rare_items": self.rare_items.tolist(),
            "counts": self.counts(),
        }
        (directory / "split.json").write_text(json.dumps(manifest, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> ColdStartSplit:
        directory = Path(directory)
        manifest_path = directory / "split.json"
        if not manifest_path.is_file():
            raise DatasetError(f"no saved split in {directory}: expected {manifest_path}")
        manifest = json.loads(manifest_path.read_text())
        parts = {}
        for name in SPLIT_PARTS:
            frame = pq.read_table(directory / f"{name}.parquet").to_pandas()
            frame["history"] = [np.asarray(h, dtype=np.int64) for h in frame["history"]]
            parts[name] = frame
        return cls(
            config=SplitConfig.model_validate(manifest["config"]),
            warm_items=np.asarray(manifest["warm_items"], dtype=np.int64),
            cold_items=np.asarray(manifest["cold_items"], dtype=np.int64),
            rare_items=np.asarray(manifest["rare_items"], dtype=np.int64),
            parts=parts,
        )


def _with_list_history(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out["history"] = [np.asarray(h, dtype=np.int64).tolist() for h in frame["history"]]
    return out


def behaviour_histories(
    interactions: pd.DataFrame,
    allowed_items: np.ndarray,
    history_length: int,
) -> np.ndarray:
    """Each row's previous clicks by the same user, strictly earlier in time.

    Args:
        interactions: (S rows) with user_id, item_id, timestamp, label.
        allowed_items: raw item ids that may appear in histories.
        history_length: H.

    Returns:
        (S, H) int64 raw item ids, oldest first, left-padded with ``HISTORY_PAD``.
    """
    users = interactions["user_id"].to_numpy(np.int64)
    times = interactions["timestamp"].to_numpy(np.int64)
    is_click = (interactions["label"].to_numpy() == 1) & np.isin(
        interactions["item_id"].to_numpy(np.int64), allowed_items
    )
    _, user_rank = np.unique(users, return_inverse=True)
    span = int(times.max() - times.min()) + 2 if len(times) else 2
    # one sortable key per (user, time): users occupy disjoint ranges of the key line
    keys = user_rank.astype(np.int64) * span + (times - (times.min() if len(times) else 0))
    click_order = np.argsort(keys[is_click], kind="stable")
    click_keys = keys[is_click][click_order]
    click_items = interactions["item_id"].to_numpy(np.int64)[is_click][click_order]
    click_users = user_rank[is_click][click_order]

    # clicks strictly before each row's (user, time); clicks of the same user start at user_start
    end = np.searchsorted(click_keys, keys, side="left")
    user_start = np.searchsorted(click_users, user_rank, side="left")
    offsets = np.arange(-history_length, 0, dtype=np.int64)
    positions = end[:, None] + offsets[None, :]
    valid = positions >= user_start[:, None]
    gathered = (
        click_items[np.clip(positions, 0, max(len(click_items) - 1, 0))]
        if len(click_items)
        else np.zeros_like(positions)
    )
    return np.where(valid, gathered, HISTORY_PAD).astype(np.int64)


def build_cold_start_split(dataset: RecDataset, config: SplitConfig) -> ColdStartSplit:
    """Split ``dataset`` into warm / cold parts as the module docstring describes.

    Deterministic: the same dataset and config give the same split.
    """
    log = dataset.interactions.reset_index(drop=True)
    counts = log.groupby("item_id").size()
    warm_items = np.sort(counts.index[counts > config.warm_min_interactions].to_numpy(np.int64))
    cold_mask = (counts >= config.cold_min) & (counts <= config.cold_max)
    cold_items = np.sort(counts.index[cold_mask].to_numpy(np.int64))
    rare_items = np.sort(counts.index[counts < config.cold_min].to_numpy(np.int64))
    if len(warm_items) == 0 or len(cold_items) == 0:
        raise DatasetError(
            f"{dataset.name}: the split found {len(warm_items)} warm and {len(cold_items)} cold "
            "items; adjust split.warm_min_interactions / cold_min / cold_max to the data"
        )

    warm_history = behaviour_histories(log, warm_items, config.history_length)
    open_history = behaviour_histories(
        log, np.concatenate([warm_items, cold_items]), config.history_length
    )

    parts: dict[str, pd.DataFrame] = {}
    warm_rows = np.flatnonzero(log["item_id"].isin(warm_items).to_numpy())
    rng = np.random.default_rng(config.seed)
    shuffled = rng.permutation(warm_rows)
    n_test = round(len(shuffled) * config.warm_test_fraction)
    n_valid = round(len(shuffled) * config.warm_valid_fraction)
    warm_index = {
        "warm_test": np.sort(shuffled[:n_test]),
        "warm_valid": np.sort(shuffled[n_test : n_test + n_valid]),
        "warm_train": np.sort(shuffled[n_test + n_valid :]),
    }
    for name, rows in warm_index.items():
        parts[name] = _part(log, rows, warm_history)

    cold_rows = log.index[log["item_id"].isin(cold_items)].to_numpy()
    cold_frame = log.loc[cold_rows, ["item_id", "timestamp"]].copy()
    cold_frame["row"] = cold_rows
    cold_frame = cold_frame.sort_values(["item_id", "timestamp", "row"], kind="stable")
    rank_in_item = cold_frame.groupby("item_id").cumcount().to_numpy()
    k = config.warmup_size
    for index, stage in enumerate(("a", "b", "c")):
        rows = cold_frame["row"].to_numpy()[
            (rank_in_item >= index * k) & (rank_in_item < (index + 1) * k)
        ]
        parts[f"cold_{stage}"] = _part(log, np.sort(rows), open_history)
    test_rows = cold_frame["row"].to_numpy()[rank_in_item >= 3 * k]
    parts["cold_test"] = _part(log, np.sort(test_rows), open_history)
    rare_rows = np.flatnonzero(log["item_id"].isin(rare_items).to_numpy())
    parts["rare"] = _part(log, rare_rows, warm_history)
    return ColdStartSplit(
        config=config,
        warm_items=warm_items,
        cold_items=cold_items,
        rare_items=rare_items,
        parts={name: parts[name] for name in SPLIT_PARTS},
    )


def _part(log: pd.DataFrame, rows: np.ndarray, histories: np.ndarray) -> pd.DataFrame:
    frame = log.loc[rows, ["user_id", "item_id", "timestamp", "rating", "label"]].reset_index(
        drop=True
    )
    frame["history"] = list(histories[rows])
    return frame
