from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from idproxy_stream.data.movielens import (
    age_bucket,
    load_movielens_100k,
    load_movielens_csv,
    read_plots,
)
from idproxy_stream.data.schema import DatasetError


def rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return [tuple(row) for row in frame[columns].itertuples(index=False)]


# ------------------------------------------------------------------------ ml-100k


def test_ml100k_items_keep_titles_years_and_genre_flags(ml100k_files):
    dataset = load_movielens_100k(ml100k_files.folder)
    items = dataset.items.set_index("item_id")
    assert items.index.tolist() == [1, 2, 3, 4, 5]
    assert items.loc[2, "title"] == "Café Lumière (2003)"  # latin-1 decoded
    assert items.loc[5, "title"] == "Night Shift (1999)"
    assert items["year"].tolist() == [1995, 2003, 1987, 0, 1999]  # 3: from the release date
    assert items["categories"].tolist() == [
        ["Animation", "Children's", "Comedy"],
        ["Drama"],
        ["Action", "Thriller"],
        [],  # the "unknown" flag is not a genre
        ["Comedy", "Horror"],
    ]
    assert items["tags"].tolist() == [[]] * 5
    assert items["description"].tolist() == [""] * 5
    assert items["image_uri"].isna().all() and items["image_bytes"].isna().all()


def test_ml100k_labels_follow_ratings_and_rows_are_sorted_by_user_then_time(ml100k_files):
    interactions = load_movielens_100k(ml100k_files.folder).interactions
    assert rows(interactions, ["user_id", "item_id", "timestamp", "rating", "label"]) == [
        (1, 2, 50, 3.0, 0),
        (1, 1, 100, 5.0, 1),
        (2, 1, 70, 4.0, 1),
        (2, 3, 80, 1.0, 0),
        (3, 2, 60, 4.0, 1),
        (3, 5, 90, 2.0, 0),
    ]
    strict = load_movielens_100k(ml100k_files.folder, click_threshold=5.0).interactions
    assert strict["label"].tolist() == [0, 1, 0, 0, 0, 0]


def test_ml100k_users_get_age_buckets_gender_and_occupation(ml100k_files):
    dataset = load_movielens_100k(ml100k_files.folder)
    assert dataset.user_feature_columns == ("age", "gender", "occupation")
    assert rows(dataset.users, ["user_id", "age", "gender", "occupation"]) == [
        (1, "18-24", "M", "technician"),
        (2, "50-55", "F", "other"),
        (3, "<18", "M", "student"),
    ]


@pytest.mark.parametrize(
    ("age", "bucket"),
    [
        (1, "<18"),
        (17, "<18"),
        (18, "18-24"),
        (24, "18-24"),
        (25, "25-34"),
        (44, "35-44"),
        (45, "45-49"),
        (49, "45-49"),
        (50, "50-55"),
        (55, "50-55"),
        (56, "56+"),
        (90, "56+"),
    ],
)
def test_age_bucket_edges(age, bucket):
    assert age_bucket(age) == bucket


def test_ml100k_plots_use_only_agreed_non_placeholder_rows(ml100k_files):
    dataset = load_movielens_100k(
        ml100k_files.folder,
        plots_path=ml100k_files.plots,
        plots_check_path=ml100k_files.plots_check,
    )
    assert dataset.items["description"].tolist() == [
        "A toy box comes alive.",
        "",  # check == disagree: the scrape matched another film
        "",  # placeholder text
        "",  # not in the plot file
        'A night of trouble,\nwith "quotes".',
    ]
    assert dataset.metadata["plots_used"] == 2


def test_plot_reader_drops_the_imdb_placeholder_even_without_a_check_file(ml100k_files):
    plots = read_plots(ml100k_files.plots)
    assert sorted(plots) == [1, 2, 5]
    assert plots[2] == "Plot of a different film."


def test_plot_reader_accepts_generic_item_id_plot_csv(tmp_path):
    path = tmp_path / "plots.csv"
    path.write_text('item_id,plot\n7,"First, plot."\n9,\n8,  Second plot  \n')
    assert read_plots(path) == {7: "First, plot.", 8: "Second plot"}


def test_ml100k_posters_resolve_through_the_map_and_missing_files_give_none(ml100k_files):
    dataset = load_movielens_100k(
        ml100k_files.folder,
        posters_path=ml100k_files.posters,
        poster_map_path=ml100k_files.poster_map,
    )
    poster = (ml100k_files.posters / "101.jpg").resolve()
    assert dataset.items["image_uri"].tolist() == [poster.as_uri(), None, None, None, None]
    uri = dataset.items["image_uri"].iloc[0]
    assert uri.startswith("file:///")
    assert Image.open(Path(uri.removeprefix("file://"))).size == (4, 6)
    assert dataset.metadata["movielens_movie_id"] == {1: 101, 2: 102}
    assert dataset.metadata["posters_found"] == 1
    assert dataset.summary()["items_with_image"] == 1


def test_ml100k_side_files_missing_their_partner_are_refused(ml100k_files):
    with pytest.raises(DatasetError, match="posters_path needs poster_map_path"):
        load_movielens_100k(ml100k_files.folder, posters_path=ml100k_files.posters)
    with pytest.raises(DatasetError, match="poster_map_path was given without posters_path"):
        load_movielens_100k(ml100k_files.folder, poster_map_path=ml100k_files.poster_map)
    with pytest.raises(DatasetError, match="plots_check_path was given without plots_path"):
        load_movielens_100k(ml100k_files.folder, plots_check_path=ml100k_files.plots_check)


def test_ml100k_missing_folder_and_files_name_what_is_expected(ml100k_files, tmp_path):
    with pytest.raises(
        DatasetError,
        match=r"data.path \(--path\): folder .* does not exist; pass the ml-100k folder",
    ):
        load_movielens_100k(tmp_path / "nowhere")
    (ml100k_files.folder / "u.item").unlink()
    with pytest.raises(DatasetError, match=r"u\.item is missing"):
        load_movielens_100k(ml100k_files.folder)


def test_ml100k_malformed_item_line_names_file_and_line(ml100k_files):
    path = ml100k_files.folder / "u.item"
    lines = path.read_bytes().decode("latin-1").splitlines()
    lines[2] = lines[2].rsplit("|", 1)[0]  # 23 fields
    path.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(DatasetError, match=r"u\.item:3: expected 24 '\|'-separated fields"):
        load_movielens_100k(ml100k_files.folder)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("2\t5\tfour\t10", r"u\.data:3: column rating must be a number, got 'four'"),
        ("2\t5\t10", r"u\.data:3: expected 4 fields"),
    ],
)
def test_ml100k_malformed_rating_line_names_file_and_line(ml100k_files, bad_line, message):
    path = ml100k_files.folder / "u.data"
    lines = path.read_text().splitlines()
    lines[2] = bad_line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=message):
        load_movielens_100k(ml100k_files.folder)


def test_ml100k_ratings_of_unknown_items_are_refused(ml100k_files):
    with (ml100k_files.folder / "u.data").open("a") as handle:
        handle.write("1\t99\t4\t10\n")
    with pytest.raises(DatasetError, match=r"1 item ids missing from the item file, e\.g\. \[99\]"):
        load_movielens_100k(ml100k_files.folder)


# --------------------------------------------------------------------- CSV format


def test_csv_items_parse_quoted_titles_genres_and_years(csv_files):
    items = load_movielens_csv(csv_files.folder).items
    assert items["item_id"].tolist() == [1, 2, 3, 4, 5]
    assert items["title"].tolist() == [
        "Toy Box (1995)",
        "Good, the Bad (1966)",
        "Empty Reel (2001)",
        "No Year Film",
        "Amélie Series (2006–2007)",
    ]
    assert items["year"].tolist() == [1995, 1966, 2001, 0, 2006]
    assert items["categories"].tolist() == [
        ["Adventure", "Animation", "Children"],
        ["Western"],
        [],
        ["Drama"],
        ["Comedy", "Romance"],
    ]


def test_csv_interactions_users_and_links(csv_files):
    dataset = load_movielens_csv(csv_files.folder)
    assert rows(dataset.interactions, ["user_id", "item_id", "timestamp", "rating", "label"]) == [
        (10, 2, 900, 3.5, 0),
        (10, 1, 1000, 4.5, 1),
        (11, 1, 1100, 2.0, 0),
        (11, 3, 1200, 4.0, 1),
        (12, 5, 1300, 5.0, 1),
    ]
    assert dataset.users["user_id"].tolist() == [10, 11, 12]
    assert dataset.user_feature_columns == ()
    assert dataset.metadata["imdb_id"] == {1: "tt0114709", 2: "tt0060196"}
    assert dataset.name == "ml-latest-tiny"


def test_csv_tags_are_lowercased_distinct_and_most_frequent_first(csv_files):
    items = load_movielens_csv(csv_files.folder).items
    assert items["tags"].tolist() == [["funny", "pixar", "classic"], ["dark, gritty"], [], [], []]


def test_csv_tags_max_timestamp_drops_later_tags_and_cap_applies(csv_files):
    before = load_movielens_csv(csv_files.folder, tags_max_timestamp=1000).items
    assert before["tags"].iloc[0] == ["funny", "classic", "pixar"]  # one "pixar" is at t=2000
    early = load_movielens_csv(csv_files.folder, tags_max_timestamp=650).items
    assert early["tags"].tolist()[:2] == [["funny"], []]
    capped = load_movielens_csv(csv_files.folder, max_tags_per_item=2).items
    assert capped["tags"].iloc[0] == ["funny", "pixar"]


def test_csv_plots_and_posters_key_on_movie_id(csv_files):
    dataset = load_movielens_csv(
        csv_files.folder, plots_path=csv_files.plots, posters_path=csv_files.posters
    )
    assert dataset.items["description"].tolist() == [
        "Toys come alive.",
        "",
        "A reel with nothing.",
        "",
        "",
    ]
    poster = (csv_files.posters / "1.jpg").resolve().as_uri()
    assert dataset.items["image_uri"].tolist() == [poster, None, None, None, None]


def test_csv_optional_files_may_be_absent(csv_files):
    (csv_files.folder / "tags.csv").unlink()
    (csv_files.folder / "links.csv").unlink()
    dataset = load_movielens_csv(csv_files.folder)
    assert dataset.items["tags"].tolist() == [[]] * 5
    assert "imdb_id" not in dataset.metadata


def test_csv_missing_ratings_and_missing_columns_are_explained(csv_files):
    ratings = csv_files.folder / "ratings.csv"
    ratings.write_text("userId,movieId,timestamp\n1,1,5\n")
    with pytest.raises(DatasetError, match=r"header lacks columns \['rating'\]"):
        load_movielens_csv(csv_files.folder)
    ratings.unlink()
    with pytest.raises(DatasetError, match=r"ratings\.csv is missing: expected userId,movieId"):
        load_movielens_csv(csv_files.folder)


def test_csv_malformed_movie_line_names_the_line(csv_files):
    movies = csv_files.folder / "movies.csv"
    movies.write_text(movies.read_text() + "6,Broken Row\n")
    with pytest.raises(DatasetError, match=r"movies\.csv:7: expected 3 fields"):
        load_movielens_csv(csv_files.folder)


def test_plot_file_with_unknown_columns_is_refused(csv_files, tmp_path):
    plots = tmp_path / "bad_plots.csv"
    plots.write_text("movie,text\n1,hello\n")
    with pytest.raises(DatasetError, match="expected columns item_id,plot"):
        load_movielens_csv(csv_files.folder, plots_path=plots)


def test_loaders_and_fixture_formats_share_one_table_layout(ml100k_files, csv_files):
    ml100k = load_movielens_100k(ml100k_files.folder)
    csv_format = load_movielens_csv(csv_files.folder)
    assert ml100k.items.dtypes.to_dict() == csv_format.items.dtypes.to_dict()
    assert ml100k.interactions.dtypes.to_dict() == csv_format.interactions.dtypes.to_dict()
    assert ml100k.interactions["label"].dtype == np.int8
    assert ml100k.interactions["rating"].dtype == np.float32
