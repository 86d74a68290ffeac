"""Store backends by import path (``store.online: "package.module:Class"``), ``store.ttl_s``
on stores that cannot expire rows, and ``ProxyReader.from_config``."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from pydantic import ValidationError

from idproxy_stream.config import AppConfig, ReaderConfig, SqliteStoreConfig, StoreConfig
from idproxy_stream.index import IdSpace
from idproxy_stream.store.base import StoreError, build_store
from idproxy_stream.store.reader import ProxyReader, ReaderSetupError

from .conftest import DIM, make_record

TEAM_STORE = '''
from pathlib import Path
from idproxy_stream.store.sqlite import SqliteStore

class TeamStore(SqliteStore):
    """A team's own backend: here a sqlite file named by its settings."""

    @classmethod
    def from_config(cls, settings):
        return cls(Path(settings["folder"]) / "team.sqlite")

class NotAStore:
    pass
'''


@pytest.fixture
def team_store(tmp_path, monkeypatch) -> str:
    (tmp_path / "team_stores.py").write_text(textwrap.dedent(TEAM_STORE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "team_stores"


def test_a_store_class_by_import_path_gets_its_settings_and_stores(tmp_path, team_store):
    config = StoreConfig(online=f"{team_store}:TeamStore", settings={"folder": str(tmp_path)})
    with build_store(config) as store:
        assert type(store).__name__ == "TeamStore"
        assert store.upsert([make_record(7)]) == 1
        assert set(store.get([7])) == {7}
    assert (tmp_path / "team.sqlite").is_file()


@pytest.mark.parametrize(
    ("online", "message"),
    [
        (
            "no_such_store_xyz:Store",
            "store.online = 'no_such_store_xyz:Store': cannot import module 'no_such_store_xyz'",
        ),
        ("team_stores:Missing", "module 'team_stores' has no 'Missing'"),
        ("team_stores:NotAStore", "'NotAStore' is not a FeatureStore subclass"),
    ],
)
def test_a_wrong_store_import_path_is_one_line_naming_store_online(team_store, online, message):
    with pytest.raises(StoreError) as raised:
        build_store(StoreConfig(online=online))
    assert "\n" not in str(raised.value) and message in str(raised.value)


def test_an_unknown_store_name_fails_when_the_config_loads():
    with pytest.raises(ValidationError, match=r"store\.online must be one of sqlite, redis"):
        StoreConfig(online="mongo")


def test_ttl_on_a_store_that_cannot_expire_rows_is_refused(tmp_path):
    config = StoreConfig(ttl_s=3_600, sqlite=SqliteStoreConfig(path=tmp_path / "p.sqlite"))
    with pytest.raises(StoreError, match=r"store\.ttl_s is set, but the SqliteStore store cannot"):
        build_store(config)


def test_proxy_reader_from_config_serves_ids_proxies_and_fallbacks(tmp_path):
    rng = np.random.default_rng(0)
    id_space = IdSpace.from_arrays(np.array([1, 2]), rng.normal(size=(2, DIM)), np.array([50, 50]))
    id_space.save(tmp_path / "model" / "id_space")
    config = AppConfig.model_validate(
        {
            "stream": {"model_dir": str(tmp_path / "model")},
            "store": {"sqlite": {"path": str(tmp_path / "p.sqlite")}},
            "reader": ReaderConfig(maturity_threshold=20).model_dump(),
        }
    )
    with build_store(config.store) as store:
        store.upsert([make_record(9, id_space_fingerprint=id_space.fingerprint)])
    with ProxyReader.from_config(config) as reader:
        result = reader.get([1, 9, 10])
    assert result.source.tolist() == ["id", "proxy", "fallback"]
    np.testing.assert_array_equal(result.embeddings[0], id_space.embeddings[0])

    missing = AppConfig.model_validate({"stream": {"model_dir": str(tmp_path / "none")}})
    with pytest.raises(ReaderSetupError, match=r"stream.model_dir = .*none holds no ID space"):
        ProxyReader.from_config(missing)
