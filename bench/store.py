"""Feature-store write rate: each backend against its raw client doing the same writes.

Same records, same batches, same run, alternating store and raw, best of ``--repeats``:

- sqlite:  ``SqliteStore.upsert`` (idempotent upsert with the order-key check) vs plain
  ``sqlite3`` ``executemany(INSERT ...)`` of the same columns into the same table, same pragmas
  (WAL, synchronous=FULL), one transaction per batch.
- redis:   ``RedisStore.upsert`` (EVALSHA of the never-go-back script, non-transactional
  pipeline) vs a redis-py non-transactional pipeline of one ``HSET`` per record with the same
  fields.
- parquet: ``ParquetProxyLog.upsert`` + ``flush`` vs ``pyarrow`` table build + ``write_table``.

Both sides start from the same ``ProxyRecord`` objects, so field encoding is timed on both.

    python bench/store.py                     # 20k records of D=16, ~1 min
    python bench/store.py --records 50000 --dim 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import redis

from idproxy_stream.events import ProxyRecord, datetime_to_us
from idproxy_stream.store.parquet import ParquetProxyLog
from idproxy_stream.store.redis import RedisStore
from idproxy_stream.store.sqlite import CREATE_TABLE, SqliteStore


def make_records(count: int, dim: int, k: int, seed: int) -> list[ProxyRecord]:
    rng = np.random.default_rng(seed)
    proxies = rng.standard_normal((count, dim)).astype(np.float32)
    neighbours = rng.integers(0, 10**9, (count, k))
    similarities = np.sort(rng.random((count, k)).astype(np.float32), axis=1)[:, ::-1]
    start = datetime(2026, 3, 1, tzinfo=UTC)
    return [
        ProxyRecord(
            item_id=i,
            proxy=proxies[i],
            model_version="bench-v1",
            encoder_fingerprint="0123456789abcdef",
            id_space_fingerprint="fedcba9876543210",
            computed_at=start + timedelta(milliseconds=i),
            source_event_ts=start + timedelta(milliseconds=i - 500),
            kafka_topic="new-items",
            kafka_partition=i % 8,
            kafka_offset=i,
            neighbours=neighbours[i],
            neighbour_similarities=similarities[i],
            void=False,
            void_score=float(rng.random()),
            status="ok",
        )
        for i in range(count)
    ]


def batches(records: list[ProxyRecord], size: int) -> list[list[ProxyRecord]]:
    return [records[start : start + size] for start in range(0, len(records), size)]


# ----------------------------------------------------------------------------- sqlite


def sqlite_store_writes(directory: Path, chunks: list[list[ProxyRecord]]) -> float:
    store = SqliteStore(directory / f"{uuid.uuid4().hex}.sqlite", synchronous="FULL")
    started = time.perf_counter()
    for chunk in chunks:
        store.upsert(chunk)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed


def sqlite_raw_writes(directory: Path, chunks: list[list[ProxyRecord]]) -> float:
    connection = sqlite3.connect(directory / f"{uuid.uuid4().hex}.sqlite", isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.executescript(CREATE_TABLE)
    insert = f"INSERT INTO proxies VALUES ({', '.join('?' * 18)})"
    started = time.perf_counter()
    for chunk in chunks:
        rows = [
            (
                r.item_id,
                r.model_version,
                r.proxy.shape[0],
                r.proxy.tobytes(),
                r.encoder_fingerprint,
                r.id_space_fingerprint,
                datetime_to_us(r.computed_at),
                datetime_to_us(r.source_event_ts),
                r.kafka_topic,
                r.kafka_partition,
                r.kafka_offset,
                r.neighbours.tobytes(),
                r.neighbour_similarities.tobytes(),
                int(r.void),
                r.void_score,
                r.status,
                datetime_to_us(r.source_event_ts),
                r.kafka_offset,
            )
            for r in chunk
        ]
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(insert, rows)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


# ------------------------------------------------------------------------------ redis


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=5_000))
    for start in range(0, len(keys), 5_000):
        client.delete(*keys[start : start + 5_000])


def redis_store_writes(client: redis.Redis, chunks: list[list[ProxyRecord]]) -> float:
    prefix = f"idproxy-bench:{uuid.uuid4().hex}:"
    store = RedisStore(client, key_prefix=prefix, pipeline_size=len(chunks[0]))
    started = time.perf_counter()
    for chunk in chunks:
        store.upsert(chunk)
    elapsed = time.perf_counter() - started
    delete_prefix(client, prefix)
    return elapsed


def redis_raw_writes(client: redis.Redis, chunks: list[list[ProxyRecord]]) -> float:
    prefix = f"idproxy-bench:{uuid.uuid4().hex}:"
    started = time.perf_counter()
    for chunk in chunks:
        pipe = client.pipeline(transaction=False)
        for r in chunk:
            pipe.hset(
                f"{prefix}{{{r.item_id}}}:v:{r.model_version}",
                mapping={
                    "proxy": r.proxy.tobytes(),
                    "dim": r.proxy.shape[0],
                    "model_version": r.model_version,
                    "encoder_fingerprint": r.encoder_fingerprint,
                    "id_space_fingerprint": r.id_space_fingerprint,
                    "computed_at_us": datetime_to_us(r.computed_at),
                    "source_event_us": datetime_to_us(r.source_event_ts),
                    "kafka_topic": r.kafka_topic,
                    "kafka_partition": r.kafka_partition,
                    "kafka_offset": r.kafka_offset,
                    "neighbours": r.neighbours.tobytes(),
                    "neighbour_similarities": r.neighbour_similarities.tobytes(),
                    "void": int(r.void),
                    "void_score": repr(r.void_score),
                    "status": r.status,
                    "order_event_us": datetime_to_us(r.source_event_ts),
                    "order_offset": r.kafka_offset,
                },
            )
        pipe.execute()
    elapsed = time.perf_counter() - started
    delete_prefix(client, prefix)
    return elapsed


# ---------------------------------------------------------------------------- parquet


def parquet_store_writes(directory: Path, chunks: list[list[ProxyRecord]]) -> float:
    log = ParquetProxyLog(directory / uuid.uuid4().hex, row_group_size=10_000)
    started = time.perf_counter()
    for chunk in chunks:
        log.upsert(chunk)
    log.flush()
    elapsed = time.perf_counter() - started
    log.close()
    return elapsed


def parquet_raw_writes(directory: Path, chunks: list[list[ProxyRecord]]) -> float:
    target = directory / uuid.uuid4().hex
    target.mkdir()
    buffered: list[ProxyRecord] = []
    started = time.perf_counter()

    def write(records: list[ProxyRecord]) -> None:
        table = pa.table(
            {
                "item_id": pa.array([r.item_id for r in records], pa.int64()),
                "proxy": pa.array([r.proxy for r in records], pa.list_(pa.float32())),
                "encoder_fingerprint": [r.encoder_fingerprint for r in records],
                "id_space_fingerprint": [r.id_space_fingerprint for r in records],
                "computed_at": pa.array(
                    [r.computed_at for r in records], pa.timestamp("us", "UTC")
                ),
                "source_event_ts": pa.array(
                    [r.source_event_ts for r in records], pa.timestamp("us", "UTC")
                ),
                "kafka_topic": [r.kafka_topic for r in records],
                "kafka_partition": pa.array([r.kafka_partition for r in records], pa.int32()),
                "kafka_offset": pa.array([r.kafka_offset for r in records], pa.int64()),
                "neighbours": pa.array([r.neighbours for r in records], pa.list_(pa.int64())),
                "neighbour_similarities": pa.array(
                    [r.neighbour_similarities for r in records], pa.list_(pa.float32())
                ),
                "void": [r.void for r in records],
                "void_score": [r.void_score for r in records],
                "status": [r.status for r in records],
            }
        )
        pq.write_table(table, target / f"{uuid.uuid4().hex}.parquet", row_group_size=10_000)

    for chunk in chunks:
        buffered.extend(chunk)
        if len(buffered) >= 10_000:
            write(buffered)
            buffered = []
    if buffered:
        write(buffered)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------- main


def best_of(repeats: int, store_run: Callable[[], float], raw_run: Callable[[], float]):
    """Alternate store and raw runs; the fastest of each (least disturbed by other load)."""
    store_times, raw_times = [], []
    for repeat in range(repeats):
        order = [(store_run, store_times), (raw_run, raw_times)]
        for run, times in order if repeat % 2 == 0 else order[::-1]:
            times.append(run())
    return min(store_times), min(raw_times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--k", type=int, default=10, help="neighbours per record")
    parser.add_argument("--batch-size", type=int, default=500, help="records per upsert call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "redis", "parquet"])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("IDPROXY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    records = make_records(args.records, args.dim, args.k, seed=0)
    chunks = batches(records, args.batch_size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="idproxy-bench-") as temporary:
        directory = Path(temporary)
        for backend in args.backends:
            if backend == "sqlite":
                store_s, raw_s = best_of(
                    args.repeats,
                    lambda: sqlite_store_writes(directory, chunks),
                    lambda: sqlite_raw_writes(directory, chunks),
                )
                raw_name = "sqlite3 executemany INSERT"
            elif backend == "redis":
                client = redis.Redis.from_url(args.redis_url)
                store_s, raw_s = best_of(
                    args.repeats,
                    lambda client=client: redis_store_writes(client, chunks),
                    lambda client=client: redis_raw_writes(client, chunks),
                )
                client.close()
                raw_name = "redis-py pipeline HSET"
            elif backend == "parquet":
                store_s, raw_s = best_of(
                    args.repeats,
                    lambda: parquet_store_writes(directory, chunks),
                    lambda: parquet_raw_writes(directory, chunks),
                )
                raw_name = "pyarrow write_table"
            else:
                parser.error(f"unknown backend {backend!r}")
            rows.append(
                {
                    "backend": backend,
                    "raw_client": raw_name,
                    "store_records_per_s": round(args.records / store_s),
                    "raw_records_per_s": round(args.records / raw_s),
                    "ratio_store_to_raw": round(raw_s / store_s, 3),
                }
            )
            print(f"  done {backend}", flush=True)

    print()
    print(
        f"{args.records:,d} records, D={args.dim}, k={args.k}, batches of {args.batch_size}, "
        f"best of {args.repeats}; load average {os.getloadavg()[0]:.1f} at the end"
    )
    header = f"{'backend':>8} {'store rec/s':>12} {'raw rec/s':>10} {'ratio':>6}  raw client"
    print(header)
    print("-" * (len(header) + 20))
    for row in rows:
        print(
            f"{row['backend']:>8} {row['store_records_per_s']:>12,d} "
            f"{row['raw_records_per_s']:>10,d} {row['ratio_store_to_raw']:>6.2f}  "
            f"{row['raw_client']}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "benchmark": "store",
            "records": args.records,
            "dim": args.dim,
            "k": args.k,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "load_average_at_end": round(os.getloadavg()[0], 2),
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
