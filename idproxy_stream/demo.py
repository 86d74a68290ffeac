"""``make demo`` / ``idproxy demo``: the whole system on one machine, no services needed.

1. start the embedded Kafka-protocol broker (tansu, in memory);
2. train the bundle on the synthetic default with the packaged MiniLM encoder — or reuse it
   when ``<work_dir>/model`` already holds one;
3. start the stream (local Ray, sqlite store under ``<work_dir>``);
4. publish new items — catalogue items the ranker has no ID for — plus two records that must
   be dead-lettered (bytes that are not JSON, and an item the ranker already serves);
5. wait until every one is a proxy row or a dead letter, print a short report (events, proxies,
   dead letters, void rate, items/s, p50/p99 latency, the nearest mature items of a few new
   items, with titles) and shut everything down.

Only this module (and the CLI) may call training: the stream itself serves trained artefacts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from idproxy_stream.artifacts import BundleLayout
from idproxy_stream.config import AppConfig, config_from_dict, load_config
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.events import NewItemEvent
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.proxy.registry import latest_version
from idproxy_stream.store.base import build_store
from idproxy_stream.store.reader import ProxyReader
from idproxy_stream.stream.broker import EmbeddedBroker
from idproxy_stream.stream.pipeline import StreamJob, bundle_problem
from idproxy_stream.stream.publish import catalogue_events, new_items, publish_events
from idproxy_stream.stream.status import StatusLine, format_seconds

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]
NEIGHBOURS_SHOWN = 3


@dataclass
class Neighbourhood:
    """A new item and its nearest mature items: ``(item_id, title, cosine)``."""

    item_id: int
    title: str
    status: str
    neighbours: list[tuple[int, str, float]]


@dataclass
class SwitchOver:
    """What ``ProxyReader.get`` returned for one new item at each stage, and for a mature one."""

    item_id: int
    title: str
    before_stream: str
    after_stream: str
    model_version: str | None
    mature_item_id: int
    mature_title: str
    mature_source: str
    maturity_threshold: int


@dataclass
class DemoReport:
    events: int
    new_items: int
    proxies: int
    dead_letters: dict[str, int]
    void_rate: float | None
    items_per_second: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    model_version: str | None
    model_reused: bool
    seconds: dict[str, float] = field(default_factory=dict)
    examples: list[Neighbourhood] = field(default_factory=list)
    store_path: Path | None = None
    model_dir: Path | None = None
    switch_over: SwitchOver | None = None

    def render(self) -> str:
        dead = ", ".join(f"{reason} {count}" for reason, count in sorted(self.dead_letters.items()))
        void = "-" if self.void_rate is None else f"{100 * self.void_rate:.1f} %"
        lines = [
            "",
            "== idproxy demo ==",
            f"model        {self.model_version} ({'reused' if self.model_reused else 'trained'})",
            f"events       {self.events} published ({self.new_items} new items + 2 bad records)",
            f"proxies      {self.proxies} rows in {self.store_path}",
            f"dead letters {sum(self.dead_letters.values())} ({dead or 'none'}): records the "
            "stream cannot or need not turn into a proxy, kept on the dead-letter topic",
            f"void rate    {void} of the proxies lie farther from every mature item's ID than "
            "almost all real IDs do (kNN check, index.keep_fraction); they are flagged in the "
            "row's status (index.void_policy), not dropped",
            "throughput   "
            + ("-" if self.items_per_second is None else f"{self.items_per_second:.0f} items/s"),
            f"latency      p50 {format_seconds(self.latency_p50_s)}, "
            f"p99 {format_seconds(self.latency_p99_s)} (record timestamp -> durable row); the "
            "events were published at once, so this is mostly time spent queued behind the "
            "backlog, not the time one item takes (bench/stream.py measures latency at half load)",
            "time         " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items()),
        ]
        for example in self.examples:
            lines.append(f"new item {example.item_id} [{example.status}] {example.title!r}")
            for neighbour_id, title, similarity in example.neighbours:
                lines.append(f"    {similarity:+.3f}  mature item {neighbour_id}: {title!r}")
        if self.switch_over is not None:
            lines.extend(self.switch_over_lines(self.switch_over))
        lines.extend(self.next_steps())
        return "\n".join(lines)

    @staticmethod
    def switch_over_lines(switch: SwitchOver) -> list[str]:
        version = f" (model {switch.model_version})" if switch.model_version else ""
        return [
            "",
            f"what a ranker reads for new item {switch.item_id} {switch.title!r} "
            "(ProxyReader.get, the switch-over policy):",
            f"  before the stream wrote it   {switch.before_stream}"
            + (
                " (mean ID of mature items: reader.fallback)"
                if switch.before_stream == "fallback"
                else ""
            ),
            f"  after the stream wrote it    {switch.after_stream}{version}",
            f"  once the ranker has learned its ID and it has >= {switch.maturity_threshold} "
            f"interactions: id (as mature item {switch.mature_item_id} "
            f"{switch.mature_title!r} reads now: {switch.mature_source})",
        ]

    def next_steps(self) -> list[str]:
        store = self.store_path or Path("proxies.sqlite")
        model = self.model_dir or Path("model")
        return [
            "",
            "next steps:",
            "  read proxies in a ranker:",
            "    from idproxy_stream.config import ReaderConfig",
            "    from idproxy_stream.index.id_space import IdSpace",
            "    from idproxy_stream.store.reader import ProxyReader",
            "    from idproxy_stream.store.sqlite import SqliteStore",
            f"    reader = ProxyReader(SqliteStore({str(store)!r}), "
            f"IdSpace.load({str(model / 'id_space')!r}), ReaderConfig())",
            "    result = reader.get([item_id])   # result.embeddings, result.source",
            "  run the stream against a broker of your own:",
            "    idproxy broker        # a local Kafka-protocol broker on 127.0.0.1:9092",
            "    idproxy train --config idproxy_stream/configs/local-stream.yaml",
            "    idproxy stream --config idproxy_stream/configs/local-stream.yaml",
            "    idproxy publish --config idproxy_stream/configs/local-stream.yaml --limit 100",
        ]


def demo_config(work_dir: Path, bootstrap_servers: str, config_path: Path | None) -> AppConfig:
    """The given config (or the defaults) pointed at the embedded broker and ``work_dir``."""
    base = load_config(config_path) if config_path is not None else AppConfig()
    raw = base.model_dump(mode="json")
    raw["kafka"].update(
        bootstrap_servers=bootstrap_servers,
        ensure_topics=True,
        session_timeout_ms=2_000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=10,
        request_timeout_ms=10_000,
    )
    raw["stream"].update(model_dir=str(work_dir / "model"), metrics_port=None, log_level="WARNING")
    raw["store"].update(online="sqlite", offline_log=False)
    raw["store"]["sqlite"]["path"] = str(work_dir / "proxies.sqlite")
    return config_from_dict(raw, "demo settings")


def mature_item(model_dir: Path) -> int:
    """The item with the most training interactions in the bundle's ID space."""
    id_space = IdSpace.load(BundleLayout(model_dir).id_space)
    return int(id_space.item_ids[int(np.argmax(id_space.interaction_counts))])


def bad_records(model_dir: Path) -> list[NewItemEvent | bytes]:
    """Two records the stream must dead-letter: not JSON, and an item the ranker serves."""
    return [
        b"\x00 this is not JSON",
        NewItemEvent(
            item_id=mature_item(model_dir), created_at=datetime.now(UTC), title="already known"
        ),
    ]


def reader_sources(config: AppConfig, item_ids: list[int]) -> list[tuple[str, str | None]]:
    """``(source, model_version)`` per item as a ranker's :class:`ProxyReader` reads it now."""
    id_space = IdSpace.load(BundleLayout(config.stream.model_dir).id_space)
    with build_store(config.store) as store:
        result = ProxyReader(store, id_space, config.reader).get(item_ids)
    return [
        (str(source), version)
        for source, version in zip(result.source, result.model_version, strict=True)
    ]


def run_demo(
    work_dir: Path = Path("artifacts/demo"),
    num_items: int = 300,
    config_path: Path | None = None,
    progress: Progress | None = None,
    timeout_s: float = 600.0,
) -> DemoReport:
    """Run the demo end to end (see the module docstring); returns the report."""
    say = progress or logger.info
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in work_dir.glob("proxies.sqlite*"):
        stale.unlink()  # each run starts from an empty store
    seconds: dict[str, float] = {}
    with EmbeddedBroker(log_path=work_dir / "broker.log") as broker:
        say(f"embedded broker on {broker.bootstrap_servers}")
        config = demo_config(work_dir, broker.bootstrap_servers, config_path)
        model_dir = config.stream.model_dir
        started = time.perf_counter()
        problem = bundle_problem(config)
        reused = problem is None
        if reused:
            say(f"reusing the model bundle in {model_dir}")
        else:
            from idproxy_stream.training.bundle import train_model_bundle

            if latest_version(BundleLayout(model_dir).registry) is not None:
                say(f"cannot reuse the bundle: {problem}")
            say(f"training the model bundle into {model_dir} (synthetic data, MiniLM) ...")
            train_model_bundle(config, model_dir, progress=say)
        seconds["model"] = time.perf_counter() - started

        dataset = load_dataset(config.data)
        fresh = new_items(dataset.items, model_dir).head(num_items)
        titles = dict(zip(dataset.items["item_id"], dataset.items["title"], strict=True))

        watched = int(fresh["item_id"].iloc[0]) if len(fresh) else None
        before = reader_sources(config, [watched]) if watched is not None else []
        started = time.perf_counter()
        say(
            f"starting the stream: local Ray, {config.stream.num_sources} source(s) x "
            f"{config.stream.num_workers} encoder worker(s) ..."
        )
        job = StreamJob(config, "demo").start()
        say(
            f"actors started in {time.perf_counter() - started:.1f} s; waiting for the workers "
            "to load the encoder and model and the consumer group to form ..."
        )
        job.wait_ready()
        seconds["stream start"] = time.perf_counter() - started
        say(f"stream ready in {seconds['stream start']:.1f} s")
        try:
            events = [*catalogue_events(fresh, image_mode="inline"), *bad_records(model_dir)]
            say(f"publishing {len(events)} events to {config.kafka.topic} ...")
            published = publish_events(config.kafka, events)
            started = time.perf_counter()
            status = StatusLine()
            deadline = time.monotonic() + timeout_s
            while True:
                stats = job.refresh()
                if stats.proxies_total + stats.dead_letters_total >= published.events:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the stream did not finish {published.events} events")
                say(status.update(stats))
                time.sleep(1.0)
            seconds["stream"] = time.perf_counter() - started
        finally:
            stats = job.stop(drain=True)
    with build_store(config.store) as store:
        records = store.get(fresh["item_id"].tolist()[:NEIGHBOURS_SHOWN])
    switch_over = None
    if watched is not None:
        mature = mature_item(model_dir)
        after = reader_sources(config, [watched, mature])
        switch_over = SwitchOver(
            item_id=watched,
            title=str(titles.get(watched, "")),
            before_stream=before[0][0],
            after_stream=after[0][0],
            model_version=after[0][1],
            mature_item_id=mature,
            mature_title=str(titles.get(mature, "")),
            mature_source=after[1][0],
            maturity_threshold=config.reader.maturity_threshold,
        )
    examples = [
        Neighbourhood(
            item_id,
            str(titles.get(item_id, "")),
            record.status,
            [
                (int(n), str(titles.get(int(n), "")), float(s))
                for n, s in zip(
                    record.neighbours[:3], record.neighbour_similarities[:3], strict=True
                )
            ],
        )
        for item_id, record in records.items()
    ]
    return DemoReport(
        events=published.events,
        new_items=len(fresh),
        proxies=stats.proxies_total,
        dead_letters=dict(stats.dead_letters),
        void_rate=stats.void_rate,
        items_per_second=stats.items_per_second(),
        latency_p50_s=stats.latency_seconds.quantile(0.5),
        latency_p99_s=stats.latency_seconds.quantile(0.99),
        model_version=stats.model_version,
        model_reused=reused,
        seconds=seconds,
        examples=examples,
        store_path=config.store.sqlite.path,
        model_dir=model_dir,
        switch_over=switch_over,
    )
