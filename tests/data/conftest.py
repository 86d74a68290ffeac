"""Tiny MovieLens folders in both public formats, written by the tests (made-up data only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

ML100K_GENRES = (
    "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\nComedy|5\nCrime|6\n"
    "Documentary|7\nDrama|8\nFantasy|9\nFilm-Noir|10\nHorror|11\nMusical|12\nMystery|13\n"
    "Romance|14\nSci-Fi|15\nThriller|16\nWar|17\nWestern|18\n\n"
)
IMDB_PLACEHOLDER = (
    "It looks like we don't have any Plot Summaries for this title yet.\n"
    "Be the first to contribute!"
)


def genre_flags(*indices: int) -> str:
    return "|".join("1" if index in indices else "0" for index in range(19))


@dataclass(frozen=True)
class Ml100kFiles:
    folder: Path
    plots: Path
    plots_check: Path
    posters: Path
    poster_map: Path


@dataclass(frozen=True)
class CsvFiles:
    folder: Path
    plots: Path
    posters: Path


def write_tiny_jpeg(path: Path) -> None:
    Image.new("RGB", (4, 6), (200, 30, 30)).save(path, format="JPEG")


@pytest.fixture
def ml100k_files(tmp_path: Path) -> Ml100kFiles:
    """Five items (one latin-1 title, one without a year in its title, the 'unknown' item,
    one with a trailing space), three users, six ratings, plots, a check file, posters."""
    tmp_path = tmp_path / "ml100k_case"
    folder = tmp_path / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "u.genre").write_text(ML100K_GENRES, encoding="latin-1")
    items = [
        f"1|Toy Box (1995)|01-Jan-1995||http://example.invalid/1|{genre_flags(3, 4, 5)}",
        f"2|Café Lumière (2003)|01-Jan-2003||http://example.invalid/2|{genre_flags(8)}",
        f"3|Untitled Reel|12-Mar-1987||http://example.invalid/3|{genre_flags(1, 16)}",
        f"4|unknown||||{genre_flags(0)}",
        f"5|Night Shift (1999) |01-Jan-1999||http://example.invalid/5|{genre_flags(5, 11)}",
    ]
    (folder / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (folder / "u.user").write_text(
        "1|24|M|technician|85711\n2|53|F|other|94043\n3|17|M|student|55105\n"
    )
    ratings = [(1, 1, 5, 100), (1, 2, 3, 50), (2, 1, 4, 70), (2, 3, 1, 80), (3, 5, 2, 90)]
    ratings.append((3, 2, 4, 60))
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))

    plots = tmp_path / "details.csv"
    plots.write_text(
        "movie_genres,movie_id,movie_title,description,rating,num_review,genre\n"
        '"[1]",1,Toy Box (1995),A toy box comes alive.,8.1,10K,"[\'Animation\']"\n'
        '"[2]",2,Other Film (1950),Plot of a different film.,7.0,1K,"[\'Drama\']"\n'
        f'"[3]",3,Untitled Reel,"{IMDB_PLACEHOLDER}",6.0,50,"[\'Action\']"\n'
        '"[4]",5,Night Shift (1999),"A night of trouble,\nwith ""quotes"".",5.5,99,"[]"\n'
    )
    plots_check = tmp_path / "imdb_id_check.csv"
    plots_check.write_text(
        "ml100k_item_id,movie_title,scraped_imdb_id,movielens_movie_id,movielens_links_imdb_id,"
        "check,placeholder_description\n"
        "1,Toy Box (1995),tt01,101,tt01,agree,0\n"
        "2,Café Lumière (2003),tt99,102,tt02,disagree,0\n"
        "3,Untitled Reel,tt03,,,agree,1\n"
        "4,unknown,,,,unknown,0\n"
        "5,Night Shift (1999),tt05,105,tt05,agree,0\n"
    )
    posters = tmp_path / "posters"
    posters.mkdir()
    write_tiny_jpeg(posters / "101.jpg")
    poster_map = tmp_path / "map.csv"
    poster_map.write_text(
        "ml100k_item_id,ml100k_title,movielens_movie_id,ml1m_title,match_method,poster_file\n"
        "1,Toy Box (1995),101,Toy Box (1995),exact_title,MovieImages/101.jpg\n"
        "2,Café Lumière (2003),102,Café Lumière (2003),exact_title,MovieImages/102.jpg\n"
        "3,Untitled Reel,,,unmatched,\n"
    )
    return Ml100kFiles(folder, plots, plots_check, posters, poster_map)


@pytest.fixture
def csv_files(tmp_path: Path) -> CsvFiles:
    """ml-latest style folder: a quoted title with a comma, a genre-less movie, a year range,
    a title without a year, tags with timestamps, links, a plot CSV and one poster."""
    tmp_path = tmp_path / "csv_case"
    folder = tmp_path / "ml-latest-tiny"
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Box (1995),Adventure|Animation|Children\n"
        '2,"Good, the Bad (1966)",Western\n'
        "3,Empty Reel (2001),(no genres listed)\n"
        "4,No Year Film,Drama\n"
        "5,Amélie Series (2006–2007),Comedy|Romance\n",
        encoding="utf-8",
    )
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "10,1,4.5,1000\n10,2,3.5,900\n11,1,2.0,1100\n11,3,4.0,1200\n12,5,5.0,1300\n"
    )
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n"
        "10,1,Funny,500\n11,1,funny,600\n12,1, Pixar ,700\n10,1,pixar,2000\n"
        '11,1,classic,800\n10,2,"dark, gritty",900\n12,4,,950\n'
    )
    (folder / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n2,0060196,\n")
    plots = tmp_path / "plots.csv"
    plots.write_text('item_id,plot\n1,Toys come alive.\n3," A reel with nothing. "\n')
    posters = tmp_path / "posters"
    posters.mkdir()
    write_tiny_jpeg(posters / "1.jpg")
    return CsvFiles(folder, plots, posters)
