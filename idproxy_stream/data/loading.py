"""One entry point from config to dataset: :func:`load_dataset` dispatches on ``config.name``."""

from __future__ import annotations

from idproxy_stream.config import DataConfig
from idproxy_stream.data.movielens import load_movielens_100k, load_movielens_csv
from idproxy_stream.data.schema import DatasetError, RecDataset
from idproxy_stream.data.synthetic import generate_synthetic
from idproxy_stream.data.table import load_table_dataset


def load_dataset(config: DataConfig) -> RecDataset:
    """The dataset ``config`` names: ``"synthetic"``, ``"ml-100k"``, ``"movielens-csv"`` or
    ``"table"`` (the generic items + interactions tables of ``docs/data.md``).

    Raises :class:`DatasetError` when a side file is given that the format cannot use
    (``plots_check_path`` / ``poster_map_path`` only apply to ml-100k).
    """
    if config.name == "synthetic":
        return generate_synthetic(config.synthetic)
    if config.path is None:  # DataConfig validates this too; kept for direct construction.
        raise DatasetError(f"data.path is required for data.name={config.name!r}")
    if config.name == "table":
        return load_table_dataset(config.path, config.table, config.click_threshold)
    if config.name == "ml-100k":
        return load_movielens_100k(
            config.path,
            plots_path=config.plots_path,
            plots_check_path=config.plots_check_path,
            posters_path=config.posters_path,
            poster_map_path=config.poster_map_path,
            click_threshold=config.click_threshold,
        )
    if config.name == "movielens-csv":
        if config.plots_check_path is not None or config.poster_map_path is not None:
            raise DatasetError(
                "data.plots_check_path and data.poster_map_path apply to ml-100k only; for "
                "movielens-csv the item id is the movieId: remove them"
            )
        return load_movielens_csv(
            config.path,
            plots_path=config.plots_path,
            posters_path=config.posters_path,
            click_threshold=config.click_threshold,
            tags_max_timestamp=config.tags_max_timestamp,
            max_tags_per_item=config.max_tags_per_item,
        )
    raise DatasetError(
        f"unknown data.name {config.name!r}: use synthetic, ml-100k, movielens-csv or table"
    )
