"""SqliteStore: WAL, durability across a process kill, and readers beside the writer."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idproxy_stream.store import StoreError
from idproxy_stream.store.sqlite import SqliteStore

from .conftest import make_record

CHILD_PRELUDE = """
import sys
sys.path.insert(0, {tests_dir!r})
from store.conftest import make_record
from idproxy_stream.store.sqlite import SqliteStore
"""


def run_child(tmp_path, body: str) -> subprocess.CompletedProcess:
    tests_dir = str(Path(__file__).resolve().parents[1])
    code = CHILD_PRELUDE.format(tests_dir=tests_dir) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )


def test_a_returned_upsert_survives_a_process_kill(tmp_path) -> None:
    path = tmp_path / "proxies.sqlite"
    child = run_child(
        tmp_path,
        f"""
        import os, signal
        store = SqliteStore({str(path)!r})
        store.upsert([make_record(i, offset=i) for i in range(500)])
        os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit, no flush
        """,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    with SqliteStore(path) as store:
        assert store.count() == 500
        assert store.get([499])[499] == make_record(499, offset=499)


def test_journal_is_wal_and_synchronous_as_configured(tmp_path) -> None:
    SqliteStore(tmp_path / "a.sqlite", synchronous="NORMAL").close()
    with SqliteStore(tmp_path / "a.sqlite", synchronous="FULL") as store:
        connection = store._open_connection()
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_reader_in_another_thread_sees_committed_rows(tmp_path) -> None:
    path = tmp_path / "proxies.sqlite"
    written = threading.Event()
    seen: dict = {}

    def read_after_write() -> None:
        with SqliteStore(path) as reader:  # its own connection, opened before the write
            written.wait(timeout=30)
            seen["after"] = reader.get([1])

    with SqliteStore(path) as writer:
        thread = threading.Thread(target=read_after_write)
        thread.start()
        writer.upsert([make_record(1)])
        written.set()
        thread.join(timeout=30)
    assert seen["after"][1] == make_record(1)


def test_a_reader_process_sees_rows_while_the_writer_stays_open(tmp_path) -> None:
    path = tmp_path / "proxies.sqlite"
    with SqliteStore(path) as writer:
        writer.upsert([make_record(i) for i in range(20)])
        child = run_child(
            tmp_path,
            f"""
            import json
            with SqliteStore({str(path)!r}) as reader:
                print(json.dumps(sorted(reader.get(range(30)))))
            """,
        )
        writer.upsert([make_record(99)])  # the writer is still usable after the reader
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout) == list(range(20))


def test_one_store_object_is_safe_across_threads(tmp_path) -> None:
    with SqliteStore(tmp_path / "a.sqlite") as store:
        threads = [
            threading.Thread(
                target=lambda base=base: [store.upsert([make_record(base + i)]) for i in range(50)]
            )
            for base in (0, 1000, 2000)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.count() == 150


def test_a_file_with_another_schema_version_is_refused(tmp_path) -> None:
    path = tmp_path / "a.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 7")
    connection.close()
    with pytest.raises(StoreError, match="schema version 7"):
        SqliteStore(path)


def test_ids_beyond_one_query_chunk_are_all_found(tmp_path) -> None:
    with SqliteStore(tmp_path / "a.sqlite") as store:
        store.upsert([make_record(i) for i in range(1_200)])
        assert len(store.get(range(1_300))) == 1_200
        assert store.delete(range(1_100)) == 1_100


order_parts = st.tuples(
    st.none() | st.integers(0, 5), st.none() | st.integers(0, 5), st.integers(0, 5)
)


@settings(max_examples=60, deadline=None)
@given(writes=st.lists(order_parts, min_size=1, max_size=8))
def test_any_write_sequence_ends_at_the_greatest_order_key(writes) -> None:
    records = [
        make_record(1, event_s=event, offset=offset, computed_s=computed, seed=position)
        for position, (event, offset, computed) in enumerate(writes)
    ]
    with (
        tempfile.TemporaryDirectory() as directory,
        SqliteStore(Path(directory) / "a.db", synchronous="NORMAL") as store,
    ):
        for record in records:
            store.upsert([record])
        stored = store.get([1])[1]
    greatest = max(record.order_key() for record in records)
    assert stored.order_key() == greatest
    # Among equal keys the first one written stays (a replay never overwrites).
    assert stored == next(r for r in records if r.order_key() == greatest)
