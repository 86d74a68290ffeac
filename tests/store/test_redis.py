"""RedisStore against the real server: key layout, TTL, glob-safe scans, auth and errors."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from idproxy_stream.config import ConfigError, RedisStoreConfig
from idproxy_stream.events import datetime_to_us
from idproxy_stream.store import StoreUnavailableError
from idproxy_stream.store.redis import RedisStore, redact_url

from .conftest import make_record


def test_a_ranker_reads_the_proxy_with_one_hget(redis_client, redis_prefix) -> None:
    record = make_record(42, "v3")
    RedisStore(redis_client, key_prefix=redis_prefix).upsert([record])
    raw = redis_client.hget(f"{redis_prefix}{{42}}:v:v3", "proxy")
    np.testing.assert_array_equal(np.frombuffer(raw, dtype="<f4"), record.proxy)
    assert redis_client.smembers(f"{redis_prefix}{{42}}:versions") == {b"v3"}
    computed_at = redis_client.hget(f"{redis_prefix}{{42}}:v:v3", "computed_at_us")
    assert int(computed_at) == datetime_to_us(record.computed_at)


def test_ttl_is_set_on_record_and_version_keys(redis_client, redis_prefix) -> None:
    RedisStore(redis_client, key_prefix=redis_prefix, ttl_s=300).upsert([make_record(1)])
    assert 0 < redis_client.ttl(f"{redis_prefix}{{1}}:v:m1") <= 300
    assert 0 < redis_client.ttl(f"{redis_prefix}{{1}}:versions") <= 300


def test_upsert_counts_only_records_that_changed_the_store(redis_client, redis_prefix) -> None:
    store = RedisStore(redis_client, key_prefix=redis_prefix, pipeline_size=3)
    records = [make_record(i, offset=10) for i in range(10)]
    assert store.upsert(records) == 10
    assert store.upsert(records) == 0
    assert store.upsert([make_record(i, offset=11) for i in range(4)]) == 4


def test_scan_is_safe_for_glob_characters_in_prefix_and_version(redis_client, redis_prefix) -> None:
    store = RedisStore(redis_client, key_prefix=f"{redis_prefix}[x]*:")
    store.upsert([make_record(1, "v*1"), make_record(2, "v?1"), make_record(3, "v11")])
    RedisStore(redis_client, key_prefix=f"{redis_prefix}x-:").upsert([make_record(4, "v*1")])
    assert [r.item_id for r in store.scan("v*1")] == [1]
    assert sorted(r.item_id for r in store.scan()) == [1, 2, 3]


def test_unreachable_server_raises_store_unavailable_naming_the_url() -> None:
    config = RedisStoreConfig(url="redis://someone@127.0.0.1:1/0", socket_timeout_s=1.0)
    with pytest.raises(StoreUnavailableError) as raised:
        RedisStore.from_config(config)
    message = str(raised.value)
    assert "redis://127.0.0.1:1/0" in message and "someone" not in message
    assert "check that the server runs" in message


def test_a_password_in_the_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="password_env"):
        RedisStore.from_config(RedisStoreConfig(url="redis://:hunter2@127.0.0.1:6379/0"))


def test_a_named_but_unset_password_env_is_refused() -> None:
    config = RedisStoreConfig(password_env="IDPROXY_TEST_UNSET_PASSWORD")
    with pytest.raises(ConfigError, match="IDPROXY_TEST_UNSET_PASSWORD"):
        RedisStore.from_config(config, environ={})


def test_redact_url_drops_user_info() -> None:
    assert redact_url("rediss://u:p@cache.example:6380/2") == "rediss://cache.example:6380/2"


@pytest.fixture
def acl_user(redis_client, redis_prefix):
    """A Redis ACL user limited to the test's key prefix; removed afterwards."""
    name, password = f"idproxy-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    redis_client.acl_setuser(
        name,
        enabled=True,
        passwords=[f"+{password}"],
        keys=[f"{redis_prefix}*"],
        commands=["+@all"],
    )
    yield name, password
    redis_client.acl_deluser(name)


def test_credentials_come_from_the_env_vars_the_config_names(
    acl_user, redis_prefix, redis_url
) -> None:
    name, password = acl_user
    config = RedisStoreConfig(
        url=redis_url, key_prefix=redis_prefix, username_env="RU", password_env="RP"
    )
    with RedisStore.from_config(config, environ={"RU": name, "RP": password}) as store:
        store.upsert([make_record(1)])
        assert 1 in store.get([1])
    with pytest.raises(StoreUnavailableError, match="password_env"):
        RedisStore.from_config(config, environ={"RU": name, "RP": "wrong"})


def _created(record, seconds_ago: float):
    """``record`` of an item created ``seconds_ago`` (its event time), computed just now."""
    import dataclasses
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return dataclasses.replace(
        record, source_event_ts=now - timedelta(seconds=seconds_ago), computed_at=now
    )


def test_store_ttl_expires_a_proxy_one_cold_start_window_after_its_item_appeared(
    redis_client, redis_prefix
) -> None:
    store = RedisStore(redis_client, key_prefix=redis_prefix)
    store.expire_after_created(1_000)
    young, old = _created(make_record(1), 100), _created(make_record(2), 5_000)
    assert store.upsert([young, old]) == 1  # the old item's window has passed: not written
    assert 850 <= redis_client.ttl(f"{redis_prefix}{{1}}:v:m1") <= 900
    assert 850 <= redis_client.ttl(f"{redis_prefix}{{1}}:versions") <= 900
    assert set(store.get([1, 2])) == {1}

    # with the per-write ttl as well, the earlier of the two expiries wins
    both = RedisStore(redis_client, key_prefix=redis_prefix, ttl_s=60)
    both.expire_after_created(1_000)
    assert both.upsert([_created(make_record(3), 100)]) == 1
    assert 0 < redis_client.ttl(f"{redis_prefix}{{3}}:v:m1") <= 60


def test_store_ttl_reaches_the_redis_store_through_the_config(redis_url, redis_prefix) -> None:
    from idproxy_stream.config import StoreConfig
    from idproxy_stream.store.base import build_store

    config = StoreConfig(
        online="redis", ttl_s=1_000, redis=RedisStoreConfig(url=redis_url, key_prefix=redis_prefix)
    )
    with build_store(config) as store:
        assert store.expire_after_created_s == 1_000
        assert store.upsert([_created(make_record(5), 5_000)]) == 0
