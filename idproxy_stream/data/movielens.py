"""MovieLens loaders: the ml-100k files and the CSV format of ml-latest(-small) / ml-25m.

Both return a :class:`~idproxy_stream.data.schema.RecDataset` whose interactions are sorted
by ``(user_id, timestamp)`` (ties keep their file order) and whose items are sorted by
``item_id``. A rating
``>= click_threshold`` is a click (``label`` 1).

Optional side content:

- plots: the IMDb scrape keyed by ml-100k item id (``movielens100k_details.csv``: only its
  ``movie_id`` and ``description`` columns are read; its rating, review-count and genre
  fields are never touched: they leak popularity or are wrong), or a generic CSV
  ``item_id,plot``. IMDb's "no plot summary yet" placeholder is always dropped.
- posters: a folder of ``<movieId>.jpg`` in the MovieLens movieId namespace. ml-100k item
  ids are another namespace, so ml-100k needs a map CSV (``ml100k_item_id``,
  ``movielens_movie_id``); in the CSV format the item id is the movieId.

Ratings are read with pyarrow's multithreaded CSV reader and every per-rating step is
vectorised, so ml-25m (25M ratings) loads in seconds.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from idproxy_stream.data.schema import DatasetError, RecDataset

logger = logging.getLogger(__name__)

ML100K_FILES = ("u.data", "u.item", "u.user", "u.genre")
ML100K_USER_FEATURES = ("age", "gender", "occupation")
ML100K_ITEM_FIELDS = 24
ML100K_GENRE_FLAGS = 19
# u.genre's "unknown" flag marks a missing genre, not a genre: it yields empty categories.
ML100K_UNKNOWN_GENRE = "unknown"
# Upper bound (exclusive) and label of each age bucket; the MovieLens 1M grouping.
AGE_BUCKETS = (
    (18, "<18"),
    (25, "18-24"),
    (35, "25-34"),
    (45, "35-44"),
    (50, "45-49"),
    (56, "50-55"),
)
OLDEST_AGE_BUCKET = "56+"

CSV_NO_GENRES = "(no genres listed)"
DEFAULT_MAX_TAGS = 20

PLOT_PLACEHOLDER_PREFIX = "It looks like we don't have any Plot Summaries"
PLOT_CHECK_COLUMNS = ("ml100k_item_id", "check", "placeholder_description")
POSTER_MAP_COLUMNS = ("ml100k_item_id", "movielens_movie_id")

TITLE_YEAR = re.compile(r"\((\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$")
TRAILING_YEAR = re.compile(r"(\d{4})\s*$")


# ------------------------------------------------------------------------ ml-100k


def load_movielens_100k(
    path: str | Path,
    plots_path: str | Path | None = None,
    plots_check_path: str | Path | None = None,
    posters_path: str | Path | None = None,
    poster_map_path: str | Path | None = None,
    click_threshold: float = 4.0,
) -> RecDataset:
    """Load the ml-100k folder (``u.data``, ``u.item``, ``u.user``, ``u.genre``).

    Items: title as in u.item (e.g. ``"Toy Story (1995)"``), year from the title or else
    the release date (0 if neither has one), categories = u.item genre flags, no tags,
    description = plot text when ``plots_path`` is given (only rows that
    ``plots_check_path`` marks ``check == "agree"`` and ``placeholder_description == 0``
    when that file is given), image_uri = ``file://`` URI of the item's poster when
    ``posters_path`` and ``poster_map_path`` are given and the file exists.
    Users: ``age`` (bucket label such as ``"25-34"``), ``gender``, ``occupation``.

    Raises :class:`DatasetError` for a missing folder/file or a malformed line.
    """
    folder = _existing_folder(path, "the ml-100k folder holding " + ", ".join(ML100K_FILES))
    for name in ML100K_FILES:
        _existing_file(folder / name, f"a file of the ml-100k folder ({', '.join(ML100K_FILES)})")
    if posters_path is not None and poster_map_path is None:
        raise DatasetError(
            "ml-100k item ids are not MovieLens movieIds: posters_path needs poster_map_path "
            "(a CSV with columns ml100k_item_id,movielens_movie_id)"
        )
    if poster_map_path is not None and posters_path is None:
        raise DatasetError("poster_map_path was given without posters_path: pass both or neither")
    if plots_check_path is not None and plots_path is None:
        raise DatasetError("plots_check_path was given without plots_path: pass both or neither")

    genres = _read_ml100k_genres(folder / "u.genre")
    items = _read_ml100k_items(folder / "u.item", genres)
    users = _read_ml100k_users(folder / "u.user")
    interactions = _read_ratings(
        folder / "u.data",
        column_names=("user_id", "item_id", "rating", "timestamp"),
        header=False,
        delimiter="\t",
        click_threshold=click_threshold,
    )
    _check_known_ids(interactions, items, users, folder / "u.data")

    metadata: dict = {
        "source": str(folder),
        "format": "ml-100k",
        "click_threshold": click_threshold,
        "genres": [genre for genre in genres if genre != ML100K_UNKNOWN_GENRE],
    }
    if plots_path is not None:
        plots = read_plots(plots_path, plots_check_path)
        items["description"] = _descriptions_for(items["item_id"], plots)
        metadata["plots_used"] = int((items["description"].str.len() > 0).sum())
    if posters_path is not None and poster_map_path is not None:
        movie_ids = read_poster_map(poster_map_path)
        item_movie_ids = items["item_id"].map(movie_ids)
        items["image_uri"] = poster_uris(item_movie_ids, posters_path)
        known_items = set(items["item_id"].tolist())
        metadata["movielens_movie_id"] = {
            item: movie for item, movie in movie_ids.items() if item in known_items
        }
        metadata["posters_found"] = int(items["image_uri"].notna().sum())
    dataset = RecDataset(
        name="ml-100k",
        items=items,
        users=users,
        interactions=interactions,
        user_feature_columns=ML100K_USER_FEATURES,
        metadata=metadata,
    )
    logger.info("loaded %s", dataset.summary())
    return dataset


def age_bucket(age: int) -> str:
    """The MovieLens-1M age group of an age in years, e.g. ``30 -> "25-34"``."""
    for upper, label in AGE_BUCKETS:
        if age < upper:
            return label
    return OLDEST_AGE_BUCKET


def _read_ml100k_genres(path: Path) -> list[str]:
    """The 19 genre names of u.genre (``name|index`` lines), in flag order."""
    by_index: dict[int, str] = {}
    for line_number, line in _nonblank_lines(path):
        fields = line.split("|")
        if len(fields) != 2 or not fields[1].strip().isdigit():
            raise DatasetError(f"{path}:{line_number}: expected 'genre name|index', got {line!r}")
        by_index[int(fields[1])] = fields[0].strip()
    if sorted(by_index) != list(range(ML100K_GENRE_FLAGS)):
        raise DatasetError(
            f"{path}: expected genres indexed 0..{ML100K_GENRE_FLAGS - 1}, got indices "
            f"{sorted(by_index)}"
        )
    return [by_index[index] for index in range(ML100K_GENRE_FLAGS)]


def _read_ml100k_items(path: Path, genres: list[str]) -> pd.DataFrame:
    """u.item (latin-1, ``|``-separated: id|title|release|video release|URL|19 flags)."""
    item_ids: list[int] = []
    titles: list[str] = []
    years: list[int] = []
    categories: list[list[str]] = []
    for line_number, line in _nonblank_lines(path):
        fields = line.split("|")
        where = f"{path}:{line_number}"
        if len(fields) != ML100K_ITEM_FIELDS:
            raise DatasetError(
                f"{where}: expected {ML100K_ITEM_FIELDS} '|'-separated fields (id|title|release "
                f"date|video release date|IMDb URL|{ML100K_GENRE_FLAGS} genre flags), "
                f"got {len(fields)}"
            )
        flags = fields[5:]
        if not fields[0].strip().isdigit() or any(flag not in ("0", "1") for flag in flags):
            raise DatasetError(
                f"{where}: expected an integer item id and 0/1 genre flags, got {line!r}"
            )
        title = fields[1].strip()
        item_ids.append(int(fields[0]))
        titles.append(title)
        years.append(_year_of(title, fields[2]))
        categories.append(
            [
                genre
                for genre, flag in zip(genres, flags, strict=True)
                if flag == "1" and genre != ML100K_UNKNOWN_GENRE
            ]
        )
    if len(set(item_ids)) != len(item_ids):
        raise DatasetError(f"{path}: item ids must be unique")
    return _items_frame(item_ids, titles, years, categories).sort_values(
        "item_id", ignore_index=True
    )


def _read_ml100k_users(path: Path) -> pd.DataFrame:
    """u.user (``id|age|gender|occupation|zip``) with the age bucketed."""
    rows: list[tuple[int, str, str, str]] = []
    for line_number, line in _nonblank_lines(path):
        fields = line.split("|")
        if len(fields) != 5 or not fields[0].isdigit() or not fields[1].isdigit():
            raise DatasetError(
                f"{path}:{line_number}: expected 'user id|age|gender|occupation|zip' with "
                f"integer id and age, got {line!r}"
            )
        rows.append((int(fields[0]), age_bucket(int(fields[1])), fields[2], fields[3]))
    users = pd.DataFrame(rows, columns=["user_id", *ML100K_USER_FEATURES])
    users["user_id"] = users["user_id"].astype(np.int64)
    for column in ML100K_USER_FEATURES:
        users[column] = users[column].astype(str)
    if users["user_id"].duplicated().any():
        raise DatasetError(f"{path}: user ids must be unique")
    return users.sort_values("user_id", ignore_index=True)


def _year_of(title: str, release_date: str) -> int:
    match = TITLE_YEAR.search(title) or TRAILING_YEAR.search(release_date)
    return int(match.group(1)) if match else 0


# --------------------------------------------------------------------- CSV format


def load_movielens_csv(
    path: str | Path,
    plots_path: str | Path | None = None,
    posters_path: str | Path | None = None,
    click_threshold: float = 4.0,
    tags_max_timestamp: int | None = None,
    max_tags_per_item: int = DEFAULT_MAX_TAGS,
) -> RecDataset:
    """Load a MovieLens CSV folder (ml-latest, ml-latest-small, ml-20m/25m/32m).

    Reads ``ratings.csv`` and ``movies.csv`` (required), ``tags.csv`` and ``links.csv``
    (optional). Items: title as in movies.csv, year from the title (0 if none),
    categories = ``genres`` split on ``|`` (``"(no genres listed)"`` gives none), tags =
    the item's distinct lower-cased tags, most frequent first (ties alphabetical), at most
    ``max_tags_per_item``. Users have no demographics (``user_feature_columns == ()``).
    The IMDb id from links.csv is kept in ``metadata["imdb_id"]`` only.

    Tags carry timestamps, and by default ALL tags are used, including ones written after
    an item's first ratings: for a strict cold-start evaluation that is future
    information. Pass ``tags_max_timestamp`` (seconds) to keep only tags written at or
    before that time, e.g. the split's cut-off time.

    ``plots_path``: a CSV ``item_id,plot`` keyed by movieId. ``posters_path``: a folder of
    ``<movieId>.jpg``.

    Raises :class:`DatasetError` for a missing folder/file or a malformed line.
    """
    folder = _existing_folder(path, "a MovieLens CSV folder holding ratings.csv and movies.csv")
    ratings_file = _existing_file(folder / "ratings.csv", "userId,movieId,rating,timestamp")
    movies_file = _existing_file(folder / "movies.csv", "movieId,title,genres")
    if max_tags_per_item < 0:
        raise DatasetError(f"max_tags_per_item must be >= 0, got {max_tags_per_item}")

    items = _read_csv_movies(movies_file)
    interactions = _read_ratings(
        ratings_file,
        column_names=("userId", "movieId", "rating", "timestamp"),
        header=True,
        delimiter=",",
        click_threshold=click_threshold,
    )
    sorted_users = interactions["user_id"].to_numpy()  # sorted: rows are ordered by user
    first_rows = np.flatnonzero(np.diff(sorted_users, prepend=sorted_users[:1] - 1))
    users = pd.DataFrame({"user_id": sorted_users[first_rows]})
    _check_known_ids(interactions, items, None, ratings_file)

    metadata: dict = {
        "source": str(folder),
        "format": "movielens-csv",
        "click_threshold": click_threshold,
        "tags_max_timestamp": tags_max_timestamp,
    }
    tags_file = folder / "tags.csv"
    if tags_file.is_file():
        tags = _read_csv_tags(tags_file, tags_max_timestamp, max_tags_per_item)
        items["tags"] = _lists_for(items["item_id"], tags)
    links_file = folder / "links.csv"
    if links_file.is_file():
        metadata["imdb_id"] = _read_csv_imdb_ids(links_file)
    if plots_path is not None:
        items["description"] = _descriptions_for(items["item_id"], read_plots(plots_path))
        metadata["plots_used"] = int((items["description"].str.len() > 0).sum())
    if posters_path is not None:
        items["image_uri"] = poster_uris(items["item_id"], posters_path)
        metadata["posters_found"] = int(items["image_uri"].notna().sum())
    dataset = RecDataset(
        name=folder.name,
        items=items,
        users=users,
        interactions=interactions,
        user_feature_columns=(),
        metadata=metadata,
    )
    logger.info("loaded %s", dataset.summary())
    return dataset


def _read_csv_movies(path: Path) -> pd.DataFrame:
    table = _read_csv_table(
        path,
        {"movieId": pa.int64(), "title": pa.string(), "genres": pa.string()},
        header=True,
        delimiter=",",
    )
    movie_ids = table.column("movieId").to_numpy()
    if len(np.unique(movie_ids)) != len(movie_ids):
        raise DatasetError(f"{path}: movieId values must be unique")
    titles = pd.Series(table.column("title").to_pylist(), dtype=str).str.strip()
    years = titles.str.extract(TITLE_YEAR, expand=False).fillna("0").astype(np.int64)
    categories = [
        [] if genres in ("", CSV_NO_GENRES) else genres.split("|")
        for genres in table.column("genres").to_pylist()
    ]
    items = _items_frame(movie_ids.tolist(), titles.tolist(), years.tolist(), categories)
    return items.sort_values("item_id", ignore_index=True)


def _read_csv_tags(
    path: Path, max_timestamp: int | None, max_per_item: int
) -> dict[int, list[str]]:
    """movieId -> distinct lower-cased tags, most frequent first, at most ``max_per_item``."""
    table = _read_csv_table(
        path,
        {"movieId": pa.int64(), "tag": pa.string(), "timestamp": pa.int64()},
        header=True,
        delimiter=",",
    )
    tags = pd.DataFrame(
        {
            "item_id": table.column("movieId").to_numpy(),
            "tag": pd.Series(table.column("tag").to_pylist(), dtype=str).str.strip().str.lower(),
            "timestamp": table.column("timestamp").to_numpy(),
        }
    )
    if max_timestamp is not None:
        tags = tags[tags["timestamp"] <= max_timestamp]
    tags = tags[tags["tag"].str.len() > 0]
    counts = tags.groupby(["item_id", "tag"]).size().rename("count").reset_index()
    counts = counts.sort_values(
        ["item_id", "count", "tag"], ascending=[True, False, True], ignore_index=True
    )
    item_ids = counts["item_id"].to_numpy()
    first_of_item = np.searchsorted(item_ids, item_ids, side="left")
    kept = (np.arange(len(item_ids)) - first_of_item) < max_per_item
    item_ids = item_ids[kept]
    tag_values = counts["tag"].to_numpy(dtype=object)[kept]
    distinct_items, starts = np.unique(item_ids, return_index=True)
    per_item = np.split(tag_values, starts[1:]) if len(starts) else []
    return {
        item: list(item_tags)
        for item, item_tags in zip(distinct_items.tolist(), per_item, strict=True)
    }


def _read_csv_imdb_ids(path: Path) -> dict[int, str]:
    """movieId -> ``"tt0114709"`` from links.csv (imdbId keeps its leading zeros)."""
    table = _read_csv_table(
        path, {"movieId": pa.int64(), "imdbId": pa.string()}, header=True, delimiter=","
    )
    return {
        int(movie): f"tt{imdb}"
        for movie, imdb in zip(
            table.column("movieId").to_pylist(), table.column("imdbId").to_pylist(), strict=True
        )
        if imdb
    }


# -------------------------------------------------------------------- side files


def read_plots(path: str | Path, check_path: str | Path | None = None) -> dict[int, str]:
    """Plot text per item id from a side CSV.

    Accepts ``item_id,plot`` or the IMDb-scrape format (``movie_id``, ``description``;
    no other column is read). Empty texts and IMDb's "no plot summary" placeholder are
    dropped. With ``check_path`` (``ml100k_item_id,check,placeholder_description``) only
    items with ``check == "agree"`` and ``placeholder_description == 0`` are kept.
    """
    plots_file = _existing_file(Path(path), "a plot CSV with columns item_id,plot")
    header = _csv_header(plots_file)
    if {"item_id", "plot"} <= set(header):
        key, text = "item_id", "plot"
    elif {"movie_id", "description"} <= set(header):
        key, text = "movie_id", "description"
    else:
        raise DatasetError(
            f"{plots_file}: expected columns item_id,plot (or movie_id,description), found {header}"
        )
    frame = _read_pandas_csv(plots_file, {key: "int64", text: str})
    if frame[key].duplicated().any():
        duplicates = sorted(frame.loc[frame[key].duplicated(), key].unique().tolist())[:5]
        raise DatasetError(f"{plots_file}: {key} must be unique, repeated: {duplicates}")
    texts = frame[text].fillna("").astype(str).str.strip()
    usable = (texts.str.len() > 0) & ~texts.str.startswith(PLOT_PLACEHOLDER_PREFIX)
    plots = dict(zip(frame.loc[usable, key].tolist(), texts[usable].tolist(), strict=True))
    if check_path is not None:
        agreed = _agreed_plot_ids(Path(check_path))
        plots = {item: plot for item, plot in plots.items() if item in agreed}
    logger.info("read %d usable plots from %s", len(plots), plots_file)
    return plots


def _agreed_plot_ids(path: Path) -> set[int]:
    _existing_file(path, "a plot check CSV with columns " + ",".join(PLOT_CHECK_COLUMNS))
    header = _csv_header(path)
    missing = [name for name in PLOT_CHECK_COLUMNS if name not in header]
    if missing:
        raise DatasetError(f"{path}: lacks columns {missing}; expected {PLOT_CHECK_COLUMNS}")
    frame = _read_pandas_csv(
        path, {"ml100k_item_id": "int64", "check": str, "placeholder_description": "int64"}
    )
    agreed = (frame["check"].str.strip() == "agree") & (frame["placeholder_description"] == 0)
    return set(frame.loc[agreed, "ml100k_item_id"].tolist())


def read_poster_map(path: str | Path) -> dict[int, int]:
    """ml-100k item id -> MovieLens movieId from the map CSV (unmatched items left out)."""
    map_file = _existing_file(Path(path), "a CSV with columns " + ",".join(POSTER_MAP_COLUMNS))
    header = _csv_header(map_file)
    missing = [name for name in POSTER_MAP_COLUMNS if name not in header]
    if missing:
        raise DatasetError(f"{map_file}: lacks columns {missing}; expected {POSTER_MAP_COLUMNS}")
    frame = _read_pandas_csv(map_file, {"ml100k_item_id": "int64", "movielens_movie_id": "Int64"})
    frame = frame.dropna(subset=["movielens_movie_id"])
    return dict(
        zip(
            frame["ml100k_item_id"].tolist(),
            frame["movielens_movie_id"].astype(np.int64).tolist(),
            strict=True,
        )
    )


def poster_uris(movie_ids: pd.Series, posters_path: str | Path) -> pd.Series:
    """``file://`` URI of ``<posters_path>/<movieId>.jpg`` per row, None where none exists.

    ``movie_ids`` may hold missing values (items without a movieId). The folder is listed
    once, so this is cheap for tens of thousands of items.
    """
    folder = _existing_folder(
        posters_path, "a folder of <movieId>.jpg posters", "data.posters_path (--posters)"
    ).resolve()
    present = {entry.name for entry in os.scandir(folder) if entry.is_file()}
    uris = [
        (folder / f"{int(movie)}.jpg").as_uri()
        if not pd.isna(movie) and f"{int(movie)}.jpg" in present
        else None
        for movie in movie_ids.tolist()
    ]
    return pd.Series(uris, index=movie_ids.index, dtype=object)


# ----------------------------------------------------------------------- helpers


def _items_frame(
    item_ids: list[int], titles: list[str], years: list[int], categories: list[list[str]]
) -> pd.DataFrame:
    """An items table with empty description/tags and no image; dtypes as in schema.py."""
    count = len(item_ids)
    return pd.DataFrame(
        {
            "item_id": np.asarray(item_ids, dtype=np.int64),
            "title": pd.Series(titles, dtype=str),
            "description": pd.Series([""] * count, dtype=str),
            "tags": pd.Series([[] for _ in range(count)], dtype=object),
            "categories": pd.Series(categories, dtype=object),
            "year": np.asarray(years, dtype=np.int64),
            "image_uri": pd.Series([None] * count, dtype=object),
            "image_bytes": pd.Series([None] * count, dtype=object),
        }
    )


def _descriptions_for(item_ids: pd.Series, plots: Mapping[int, str]) -> pd.Series:
    return pd.Series([plots.get(item, "") for item in item_ids.tolist()], dtype=str)


def _lists_for(item_ids: pd.Series, lists: Mapping[int, list[str]]) -> pd.Series:
    return pd.Series([list(lists.get(item, [])) for item in item_ids.tolist()], dtype=object)


def _read_ratings(
    path: Path,
    column_names: tuple[str, str, str, str],
    header: bool,
    delimiter: str,
    click_threshold: float,
) -> pd.DataFrame:
    """A ratings file as the interactions table, sorted by (user_id, timestamp).

    Rows with equal user and timestamp keep their file order.
    """
    user, item, rating, timestamp = column_names
    table = _read_csv_table(
        path,
        {user: pa.int64(), item: pa.int64(), rating: pa.float32(), timestamp: pa.int64()},
        header=header,
        delimiter=delimiter,
    )
    users = table.column(user).to_numpy()
    items = table.column(item).to_numpy()
    timestamps = table.column(timestamp).to_numpy()
    ratings = table.column(rating).to_numpy()
    if np.isnan(ratings).any():
        raise DatasetError(f"{path}: ratings must be numbers, found NaN")
    order = _user_time_order(users, timestamps)
    ratings = ratings[order]
    # copy=False: the gathered arrays are fresh; consolidating them would copy 25M rows again.
    return pd.DataFrame(
        {
            "user_id": users[order],
            "item_id": items[order],
            "timestamp": timestamps[order],
            "rating": ratings,
            "label": (ratings >= click_threshold).astype(np.int8),
        },
        copy=False,
    )


def _user_time_order(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Stable permutation sorting rows by (user, timestamp).

    One stable argsort of a packed 64-bit key when ids and the time span fit (25M rows in
    ~1.5 s); a two-key lexsort otherwise (~15x slower).
    """
    if len(users) == 0:
        return np.arange(0)
    span = int(timestamps.max()) - int(timestamps.min())
    if users.min() >= 0 and users.max() < 2**31 and span < 2**32:
        key = (users << 32) | (timestamps - timestamps.min())
        return np.argsort(key, kind="stable")
    return np.lexsort((timestamps, users))


def _check_known_ids(
    interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame | None, path: Path
) -> None:
    for kind, known in (("item", items), ("user", users)):
        if known is None:
            continue
        referenced = interactions[f"{kind}_id"].to_numpy()
        unknown = np.unique(referenced[~np.isin(referenced, known[f"{kind}_id"].to_numpy())])
        if len(unknown):
            raise DatasetError(
                f"{path}: ratings refer to {len(unknown)} {kind} ids missing from the {kind} "
                f"file, e.g. {unknown[:5].tolist()}"
            )


def _read_csv_table(
    path: Path, column_types: dict[str, pa.DataType], header: bool, delimiter: str
) -> pa.Table:
    """Read the typed columns of a CSV with pyarrow; DatasetError names the bad line.

    ``header=False`` means the file has exactly the columns of ``column_types``, in order.
    """
    names = list(column_types)
    if header:
        found = _csv_header(path, delimiter)
        missing = [name for name in names if name not in found]
        if missing:
            raise DatasetError(
                f"{path}: header lacks columns {missing}; expected at least {','.join(names)} "
                f"(found {','.join(found)})"
            )
    read_options = pacsv.ReadOptions(column_names=None if header else names)
    parse_options = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    if not header:
        parse_options = pacsv.ParseOptions(delimiter=delimiter, quote_char=False)
    convert_options = pacsv.ConvertOptions(
        column_types=column_types,
        include_columns=names,
        null_values=[],
        strings_can_be_null=False,
    )
    try:
        return pacsv.read_csv(
            path,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
    except pa.ArrowInvalid as error:
        raise DatasetError(
            _describe_bad_line(path, column_types, header, delimiter, str(error))
        ) from None


def _describe_bad_line(
    path: Path, column_types: dict[str, pa.DataType], header: bool, delimiter: str, reason: str
) -> str:
    """Find the first malformed line of a CSV (error path only) and describe it."""
    numeric: dict[str, Callable[[str], object]] = {
        name: (int if pa.types.is_integer(kind) else float)
        for name, kind in column_types.items()
        if pa.types.is_integer(kind) or pa.types.is_floating(kind)
    }
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        quoting = csv.QUOTE_MINIMAL if header else csv.QUOTE_NONE
        rows = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        columns = next(rows) if header else list(column_types)
        positions = {name: columns.index(name) for name in numeric if name in columns}
        for row in rows:
            line = rows.line_num
            if len(row) != len(columns):
                return (
                    f"{path}:{line}: expected {len(columns)} fields "
                    f"({delimiter.join(columns)!r}), got {len(row)}: {delimiter.join(row)!r}"
                )
            for name, position in positions.items():
                try:
                    numeric[name](row[position])
                except ValueError:
                    return f"{path}:{line}: column {name} must be a number, got {row[position]!r}"
    return f"{path}: could not be parsed as CSV: {reason}"


def _csv_header(path: Path, delimiter: str = ",") -> list[str]:
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        first = next(csv.reader(handle, delimiter=delimiter), None)
    if not first:
        raise DatasetError(f"{path}: is empty; expected a CSV header line")
    return [name.strip().lstrip("\ufeff") for name in first]


def _read_pandas_csv(path: Path, dtypes: dict[str, object]) -> pd.DataFrame:
    """The named columns of a small side CSV (quoted multi-line fields allowed)."""
    try:
        return pd.read_csv(
            path, usecols=list(dtypes), dtype=dtypes, keep_default_na=False, na_values=[""]
        )
    except (ValueError, pd.errors.ParserError) as error:
        raise DatasetError(
            f"{path}: malformed ({error}); expected columns {list(dtypes)}"
        ) from None


def _nonblank_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line) of every non-blank line; ml-100k files are latin-1."""
    text = path.read_text(encoding="latin-1")
    return [
        (number, line.rstrip("\r"))
        for number, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]


def _existing_folder(path: str | Path, expected: str, setting: str = "data.path (--path)") -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{setting}: folder {folder} does not exist; pass {expected}")
    return folder


def _existing_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"file {path} is missing: expected {expected}")
    return path
