"""Online feature store on Redis, laid out for the ranker's lookup by item and version.

Keys (``{prefix}`` = ``RedisStoreConfig.key_prefix``; the item id in braces is a hash tag, so
both keys of an item live in the same Redis Cluster slot)::

    {prefix}{<item_id>}:v:<model_version>   hash: one record (fields below)
    {prefix}{<item_id>}:versions            set: the model versions stored for the item

Record fields: ``proxy`` (little-endian float32 bytes, ``dim`` of them), ``dim``,
``model_version``, ``encoder_fingerprint``, ``id_space_fingerprint``, ``computed_at_us``,
``source_event_us``, ``kafka_topic``, ``kafka_partition``, ``kafka_offset``, ``neighbours``
(int64 bytes), ``neighbour_similarities`` (float32 bytes), ``void`` (0/1), ``void_score``,
``status``, ``order_event_us``, ``order_offset``; an empty string is a missing value. A ranker
in any language serving version ``v`` reads ``HGET {prefix}{42}:v:v proxy``.

Writes go through a Lua script (sent as EVALSHA in a non-transactional pipeline) that applies
the never-go-back rule atomically per key: the record is written only when its order key
``(order_event_us, order_offset, computed_at_us)`` is greater than the stored one. Expiry
(``EXPIREAT`` on both keys at each write) is the earlier of ``ttl_s`` after the write
(``store.redis.ttl_s``) and the cold-start window after the item's creation
(``store.ttl_s``: ``source_event_ts``, else ``computed_at``, plus the window); a record already
past its window is not written.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import redis
import redis.exceptions

from idproxy_stream.config import ConfigError, RedisStoreConfig, resolve_secret
from idproxy_stream.events import ProxyRecord, datetime_to_us, us_to_datetime
from idproxy_stream.store.base import (
    FeatureStore,
    StoreClosedError,
    StoreUnavailableError,
    checked_item_ids,
    checked_records,
    newest_per_item,
)

logger = logging.getLogger(__name__)

# Order of the values after the three order-key values in the upsert script's ARGV.
RECORD_FIELDS = (
    "proxy",
    "dim",
    "model_version",
    "encoder_fingerprint",
    "id_space_fingerprint",
    "source_event_us",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "neighbours",
    "neighbour_similarities",
    "void",
    "void_score",
    "status",
)
_FIRST_RECORD_ARG = 5  # ARGV[1..3] order key, ARGV[4] expire-at (unix s, 0 = never), fields


def _upsert_script() -> str:
    field_pairs = ", ".join(
        f"'{name}', ARGV[{_FIRST_RECORD_ARG + i}]" for i, name in enumerate(RECORD_FIELDS)
    )
    version_arg = _FIRST_RECORD_ARG + RECORD_FIELDS.index("model_version")
    return f"""
local stored = redis.call('HMGET', KEYS[1], 'order_event_us', 'order_offset', 'computed_at_us')
if stored[3] then
  local event, offset, computed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
  local old_event, old_offset = tonumber(stored[1]), tonumber(stored[2])
  local old_computed = tonumber(stored[3])
  local newer = event > old_event or (event == old_event and (offset > old_offset or
    (offset == old_offset and computed > old_computed)))
  if not newer then return 0 end
else
  redis.call('SADD', KEYS[2], ARGV[{version_arg}])
end
redis.call('HSET', KEYS[1], 'order_event_us', ARGV[1], 'order_offset', ARGV[2],
  'computed_at_us', ARGV[3], {field_pairs})
local expire_at = tonumber(ARGV[4])
if expire_at > 0 then
  redis.call('EXPIREAT', KEYS[1], expire_at)
  redis.call('EXPIREAT', KEYS[2], expire_at)
end
return 1
"""


UPSERT_SCRIPT = _upsert_script()
_GLOB_SPECIALS = "\\*?[]"


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in _GLOB_SPECIALS else char for char in text)


def redact_url(url: str) -> str:
    """``url`` without user info, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _text(value: bytes | None) -> str | None:
    return None if value is None or value == b"" else value.decode()


def _int(value: bytes | None) -> int | None:
    return None if value is None or value == b"" else int(value)


def record_to_args(record: ProxyRecord, expire_at_s: int) -> list:
    """ARGV of the upsert script for ``record``: order key, expire-at (Unix seconds, 0 =
    never), then :data:`RECORD_FIELDS`."""
    order_event_us, order_offset, computed_at_us = record.order_key()
    return [
        order_event_us,
        order_offset,
        computed_at_us,
        expire_at_s,
        record.proxy.astype("<f4", copy=False).tobytes(),
        record.dim,
        record.model_version,
        record.encoder_fingerprint,
        record.id_space_fingerprint,
        "" if record.source_event_ts is None else order_event_us,
        record.kafka_topic or "",
        "" if record.kafka_partition is None else record.kafka_partition,
        "" if record.kafka_offset is None else record.kafka_offset,
        record.neighbours.astype("<i8", copy=False).tobytes(),
        record.neighbour_similarities.astype("<f4", copy=False).tobytes(),
        int(record.void),
        "" if record.void_score is None else repr(record.void_score),
        record.status,
    ]


def fields_to_record(item_id: int, fields: Mapping[bytes, bytes]) -> ProxyRecord:
    """A :class:`ProxyRecord` from the hash fields of one record key."""
    source_event_us = _int(fields.get(b"source_event_us"))
    void_score = fields.get(b"void_score")
    return ProxyRecord(
        item_id=item_id,
        proxy=np.frombuffer(fields[b"proxy"], dtype="<f4"),
        model_version=fields[b"model_version"].decode(),
        encoder_fingerprint=fields[b"encoder_fingerprint"].decode(),
        id_space_fingerprint=fields[b"id_space_fingerprint"].decode(),
        computed_at=us_to_datetime(int(fields[b"computed_at_us"])),
        source_event_ts=None if source_event_us is None else us_to_datetime(source_event_us),
        kafka_topic=_text(fields.get(b"kafka_topic")),
        kafka_partition=_int(fields.get(b"kafka_partition")),
        kafka_offset=_int(fields.get(b"kafka_offset")),
        neighbours=np.frombuffer(fields[b"neighbours"], dtype="<i8"),
        neighbour_similarities=np.frombuffer(fields[b"neighbour_similarities"], dtype="<f4"),
        void=fields[b"void"] == b"1",
        void_score=None if not void_score else float(void_score),
        status=fields[b"status"].decode(),
    )


class RedisStore(FeatureStore):
    """Feature store on a Redis server (layout and guarantees in the module docstring)."""

    name = "redis"

    def __init__(
        self,
        client: redis.Redis,
        key_prefix: str = "idproxy:",
        ttl_s: int | None = None,
        pipeline_size: int = 1_000,
        display_url: str = "redis",
        owns_client: bool = False,
    ) -> None:
        """Use ``client``; ``close()`` closes it only when ``owns_client`` (``from_config``)."""
        self.key_prefix = key_prefix
        self.owns_client = owns_client
        self.ttl_s = ttl_s
        self.expire_after_created_s: int | None = None
        self.pipeline_size = pipeline_size
        self.display_url = display_url
        self._client: redis.Redis | None = client
        self._upsert = client.register_script(UPSERT_SCRIPT)
        with self._translate_errors("connect to"):
            client.ping()

    @classmethod
    def from_config(
        cls, config: RedisStoreConfig, environ: Mapping[str, str] | None = None
    ) -> RedisStore:
        """Connect as ``config`` says; secrets come from the env vars it names, never the URL."""
        parts = urlsplit(config.url)
        if parts.password:
            raise ConfigError(
                "store.redis.url holds a password: remove it from the URL and put it in an "
                "environment variable named by store.redis.password_env"
            )
        url = config.url
        if config.ssl and parts.scheme == "redis":
            url = urlunsplit(("rediss", *parts[1:]))
        options: dict = {
            "socket_timeout": config.socket_timeout_s,
            "socket_connect_timeout": config.socket_timeout_s,
        }
        password = resolve_secret(config.password_env, environ)
        username = resolve_secret(config.username_env, environ)
        if password is not None:
            options["password"] = password
        if username is not None:
            options["username"] = username
        if url.startswith("rediss://") and config.ssl_ca_certs is not None:
            options["ssl_ca_certs"] = str(config.ssl_ca_certs)
        client = redis.Redis.from_url(url, **options)
        return cls(
            client,
            config.key_prefix,
            config.ttl_s,
            config.pipeline_size,
            display_url=redact_url(url),
            owns_client=True,
        )

    @contextlib.contextmanager
    def _translate_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.AuthenticationError as error:
            raise StoreUnavailableError(
                f"Redis at {self.display_url} refused the credentials ({error}): check the "
                "env vars named by store.redis.password_env / username_env"
            ) from error
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as error:
            raise StoreUnavailableError(
                f"cannot {action} Redis at {self.display_url} ({error}): check that the server "
                "runs and is reachable, the URL (store.redis.url), TLS (store.redis.ssl) and "
                "the password env var"
            ) from error

    def _redis(self) -> redis.Redis:
        if self._client is None:
            raise StoreClosedError(f"Redis store at {self.display_url} is closed")
        return self._client

    def record_key(self, item_id: int, model_version: str) -> str:
        return f"{self.key_prefix}{{{item_id}}}:v:{model_version}"

    def versions_key(self, item_id: int) -> str:
        return f"{self.key_prefix}{{{item_id}}}:versions"

    def expire_after_created(self, ttl_s: int) -> None:
        """Expire each record ``ttl_s`` after its item's creation (``store.ttl_s``)."""
        self.expire_after_created_s = ttl_s

    def expire_at(self, record: ProxyRecord, now_s: int) -> int:
        """Unix seconds at which ``record``'s keys expire (0 = never): the earlier of
        ``ttl_s`` after ``now_s`` and the cold-start window after the item's creation."""
        candidates = [now_s + self.ttl_s] if self.ttl_s else []
        if self.expire_after_created_s is not None:
            created = record.source_event_ts or record.computed_at
            candidates.append(int(created.timestamp()) + self.expire_after_created_s)
        return min(candidates) if candidates else 0

    def upsert(self, records: Iterable[ProxyRecord]) -> int:
        listed = checked_records(records)
        client = self._redis()
        now_s = int(time.time())
        expiries = [self.expire_at(record, now_s) for record in listed]
        live = [(r, e) for r, e in zip(listed, expiries, strict=True) if e == 0 or e > now_s]
        if len(live) < len(listed):
            logger.debug("%d records past store.ttl_s not written", len(listed) - len(live))
        changed = 0
        with self._translate_errors("write to"):
            for start in range(0, len(live), self.pipeline_size):
                pipe = client.pipeline(transaction=False)
                pipe.scripts.add(self._upsert)  # loaded once per pipeline if the server lacks it
                for record, expire_at_s in live[start : start + self.pipeline_size]:
                    # EVALSHA directly: Script.__call__ re-registers the script on every call.
                    pipe.execute_command(
                        "EVALSHA",
                        self._upsert.sha,
                        2,
                        self.record_key(record.item_id, record.model_version),
                        self.versions_key(record.item_id),
                        *record_to_args(record, expire_at_s),
                    )
                changed += sum(pipe.execute())
        return changed

    def _fetch(self, keys: list[tuple[int, str]]) -> list[ProxyRecord]:
        """Records at ``(item_id, model_version)`` keys that exist, in pipelined HGETALLs."""
        client = self._redis()
        records = []
        for start in range(0, len(keys), self.pipeline_size):
            chunk = keys[start : start + self.pipeline_size]
            pipe = client.pipeline(transaction=False)
            for item_id, version in chunk:
                pipe.hgetall(self.record_key(item_id, version))
            for (item_id, _), fields in zip(chunk, pipe.execute(), strict=True):
                if fields:
                    records.append(fields_to_record(item_id, fields))
        return records

    def _versions(self, item_ids: list[int]) -> list[tuple[int, str]]:
        client = self._redis()
        keys = []
        for start in range(0, len(item_ids), self.pipeline_size):
            chunk = item_ids[start : start + self.pipeline_size]
            pipe = client.pipeline(transaction=False)
            for item_id in chunk:
                pipe.smembers(self.versions_key(item_id))
            for item_id, versions in zip(chunk, pipe.execute(), strict=True):
                keys.extend((item_id, version.decode()) for version in versions)
        return keys

    def get(
        self, item_ids: Iterable[int], model_version: str | None = None
    ) -> dict[int, ProxyRecord]:
        ids = checked_item_ids(item_ids)
        with self._translate_errors("read from"):
            if model_version is not None:
                return {r.item_id: r for r in self._fetch([(i, model_version) for i in ids])}
            return newest_per_item(self._fetch(self._versions(ids)))

    def _parse_record_key(self, key: bytes) -> tuple[int, str]:
        body = key.decode()[len(self.key_prefix) :]
        item_part, version = body.split(":v:", 1)
        return int(item_part.strip("{}")), version

    def scan(
        self,
        model_version: str | None = None,
        since: datetime | None = None,
        batch_size: int = 1_000,
    ) -> Iterator[ProxyRecord]:
        version_pattern = "*" if model_version is None else _glob_escape(model_version)
        pattern = f"{_glob_escape(self.key_prefix)}{{*}}:v:{version_pattern}"
        since_us = None if since is None else datetime_to_us(since)
        seen: set[tuple[int, str]] = set()  # SCAN may return a key more than once
        cursor = 0
        while True:
            with self._translate_errors("scan"):
                cursor, raw_keys = self._redis().scan(cursor, match=pattern, count=batch_size)
                keys = [self._parse_record_key(key) for key in raw_keys]
                keys = [key for key in keys if key not in seen]
                seen.update(keys)
                records = self._fetch(keys)
            for record in records:
                if since_us is None or datetime_to_us(record.computed_at) >= since_us:
                    yield record
            if cursor == 0:
                return

    def delete(self, item_ids: Iterable[int], model_version: str | None = None) -> int:
        ids = checked_item_ids(item_ids)
        with self._translate_errors("delete from"):
            keys = (
                self._versions(ids)
                if model_version is None
                else [(item_id, model_version) for item_id in ids]
            )
            pipe = self._redis().pipeline(transaction=False)
            for item_id, version in keys:
                pipe.delete(self.record_key(item_id, version))
                pipe.srem(self.versions_key(item_id), version)
            results = pipe.execute()
        return int(sum(results[0::2]))

    def close(self) -> None:
        if self._client is not None and self.owns_client:
            self._client.close()
        self._client = None
