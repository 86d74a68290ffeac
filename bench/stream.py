"""Streaming job throughput, latency and memory, side by side with its baselines, in one run.

Same machine, same encoder (the packaged MiniLM), same ProxyModel, same events:

1. **bare worker**: ``ProxyWorker.encode`` in this process on batches of ``--batch`` events with
   every core for torch — the encoder + proxy head and nothing else (no Kafka, no Ray, no check,
   no store).
2. **stream**: the streaming job (``StreamJob``: source + ``--workers`` worker actors with one
   torch thread each + sink with neighbour check, sqlite writes and offset commits) started
   and ready, then ``--items`` events published at once; sustained items/s = events /
   (last durable write - first publish).
3. **Ray Data**: bounded ``ray.data.read_kafka`` of the same events (another topic, written one
   record per produce batch because tansu under-reports partition ends otherwise; the count
   is checked) + ``map_batches`` with a callable class running the same ``ProxyWorker.encode``
   and the neighbour check, ``--workers`` actors with one torch thread each. Reported twice:
   wall time of the whole read (actor start-up included) and steady items/s (first batch
   start -> last batch end, as the stream's figure excludes start-up too).
4. **latency**: the stream fed at about half its sustained rate for ``--latency-seconds``;
   p50/p99 of record timestamp -> durable row (the job's end-to-end histogram).
5. **RSS over a backlog**: ``--rss-events`` events (default 1e5) waiting in the topic; the
   job's actor processes' RSS sampled for ``--rss-seconds`` with the in-flight bound
   (``stream.max_in_flight``) and, for contrast, with the bound effectively off.

Paths 1-3 alternate for ``--rounds`` rounds (the stream job stays up, idle, in between) and
the best run of each is reported, so a neighbour's load on a shared machine hits them alike.

    python bench/stream.py                              # ~6 min on 2 cores
    python bench/stream.py --items 1000 --rss-events 20000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from idproxy_stream.cluster.local_ray import ensure_ray
from idproxy_stream.config import AppConfig, config_from_dict, with_updates
from idproxy_stream.data.loading import load_dataset
from idproxy_stream.events import NewItemEvent, decode_new_item_event
from idproxy_stream.process import set_faiss_threads, set_torch_threads
from idproxy_stream.stream.broker import EmbeddedBroker
from idproxy_stream.stream.messages import WorkItem
from idproxy_stream.stream.metrics import Histogram, StreamStats
from idproxy_stream.stream.pipeline import StreamJob, bundle_problem
from idproxy_stream.stream.publish import catalogue_events, new_items, publish_events
from idproxy_stream.stream.sink import ProxySink, SinkSettings
from idproxy_stream.stream.topics import ensure_topics, stream_topics
from idproxy_stream.stream.worker import ProxyWorker, WorkerSettings

ACTOR_TITLES = ("ray::StreamSource", "ray::ProxyWorker", "ray::ProxySink")


def bench_config(args: argparse.Namespace, bootstrap: str, work_dir: Path, **stream) -> AppConfig:
    suffix = uuid.uuid4().hex[:6]
    raw = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "topic": f"bench-{suffix}",
            "dead_letter_topic": f"bench-{suffix}.dlq",
            "group_id": f"bench-{suffix}",
            "session_timeout_ms": 2_000,
            "heartbeat_interval_ms": 500,
            "fetch_max_wait_ms": 10,
            "topic_partitions": args.partitions,
            "ensure_topics": True,
        },
        "stream": {
            "model_dir": str(args.model_dir),
            "num_workers": args.workers,
            "torch_threads_per_worker": 1,
            "max_batch_size": args.batch,
            "metrics_port": None,
            "log_level": "WARNING",
            **stream,
        },
        "store": {"sqlite": {"path": str(work_dir / f"proxies-{suffix}.sqlite")}},
    }
    return config_from_dict(raw, "bench settings")


def make_events(count: int, first_id: int, model_dir: Path) -> list[NewItemEvent]:
    """``count`` events with unique ids, content cycling over the catalogue's new items."""
    items = new_items(load_dataset(AppConfig().data).items, model_dir)
    base = list(catalogue_events(items, image_mode="inline"))
    return [base[i % len(base)].model_copy(update={"item_id": first_id + i}) for i in range(count)]


def bare_worker(args: argparse.Namespace, config: AppConfig, events) -> dict:
    """Best of one torch thread and every core, same worker code, no Kafka/Ray/check/store."""
    import torch

    worker = ProxyWorker(WorkerSettings.of(config))
    items = [WorkItem("bench", 0, i, e) for i, e in enumerate(events)]
    runs = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        worker.encode(items[: args.batch])  # warm-up
        started = time.perf_counter()
        done = 0
        for start in range(0, len(items), args.batch):
            batch = worker.encode(items[start : start + args.batch])
            done += len(batch.rows) + len(batch.rejected)
        runs[threads] = done / (time.perf_counter() - started)
    best = max(runs, key=runs.get)
    return {
        "items": len(items),
        "items_per_s": runs[best],
        "threads": best,
        "items_per_s_by_threads": runs,
    }


def wait_done(job: StreamJob, total: int, timeout_s: float) -> StreamStats:
    deadline = time.monotonic() + timeout_s
    while True:
        stats = job.refresh()
        if stats.proxies_total + stats.dead_letters_total >= total:
            return stats
        if time.monotonic() > deadline:
            raise TimeoutError(f"the stream handled {stats.proxies_total} of {total} in time")
        time.sleep(0.2)


def histogram_delta(after: Histogram, before: Histogram) -> Histogram:
    counts = [a - b for a, b in zip(after.counts, before.counts, strict=True)]
    return Histogram(after.bounds, counts, after.total - before.total)


def stream_backlog(job: StreamJob, config: AppConfig, events, done_before: int) -> dict:
    """Publish ``events`` at once to a ready job; items/s until the last durable write."""
    started = time.time()
    publish_events(config.kafka, events)
    stats = wait_done(job, done_before + len(events), timeout_s=3600)
    seconds = stats.last_write_at - started
    return {
        "items": len(events),
        "seconds": seconds,
        "items_per_s": len(events) / seconds,
        "void_rate": stats.void_rate,
        "batch_size_p50": stats.batch_size.quantile(0.5),
    }


def stream_latency(
    args: argparse.Namespace, job: StreamJob, config: AppConfig, rate: float, done_before: int
) -> dict:
    """End-to-end latency while the job is fed ``rate`` events per second."""
    paced = make_events(int(rate * args.latency_seconds), 50_000_000, args.model_dir)
    before = job.refresh()
    publish_events(config.kafka, paced, rate=rate)
    after = wait_done(job, done_before + len(paced), timeout_s=600)
    window = histogram_delta(after.latency_seconds, before.latency_seconds)
    return {
        "rate_per_s": rate,
        "items": len(paced),
        "p50_ms": 1000 * window.quantile(0.5),
        "p99_ms": 1000 * window.quantile(0.99),
    }


class RayDataProxies:
    """``map_batches`` UDF: decode records, run the same worker code and neighbour check."""

    def __init__(self, config: AppConfig) -> None:
        # This actor's entry point: the threads the stream's worker and sink processes get.
        set_torch_threads(config.stream.torch_threads_per_worker)
        set_faiss_threads(config.index.num_threads or 1)
        self.config = config
        self.worker = ProxyWorker(WorkerSettings.of(config))
        self.checker = ProxySink(SinkSettings.of(config)).checker

    def __call__(self, batch: dict) -> dict:
        started = time.time()
        kafka, stream = self.config.kafka, self.config.stream
        items = [
            WorkItem(
                "bench",
                int(p),
                int(o),
                decode_new_item_event(v, kafka.max_event_bytes, stream.max_text_chars),
            )
            for p, o, v in zip(batch["partition"], batch["offset"], batch["value"], strict=True)
        ]
        encoded = self.worker.encode(items)
        statuses = [d.status for d in self.checker.decide(encoded.proxies)] if encoded.rows else []
        size = len(items)
        return {
            "items": np.array([size]),
            "proxies": np.array([len(statuses)]),
            "started": np.array([started]),
            "finished": np.array([time.time()]),
            "pid": np.array([os.getpid()]),
        }


def ray_data_phase(args: argparse.Namespace, config: AppConfig, events, round_: int) -> dict:
    import ray

    topic = f"{config.kafka.topic}-raydata-{round_}"
    ensure_topics(config.kafka, [topic], args.partitions)
    publish_events(config.kafka, events, topic=topic, one_record_per_batch=True)
    started = time.perf_counter()
    dataset = ray.data.read_kafka(topic, bootstrap_servers=config.kafka.bootstrap_servers)
    results = dataset.map_batches(
        RayDataProxies,
        fn_constructor_args=(config,),
        batch_size=args.batch,
        concurrency=args.workers,
        num_cpus=config.stream.worker_num_cpus,
    ).take_all()
    wall = time.perf_counter() - started
    items = int(sum(row["items"] for row in results))
    first = min(row["started"] for row in results)
    last = max(row["finished"] for row in results)
    return {
        "items": items,
        "read_all": items == len(events),
        "wall_seconds": wall,
        "wall_items_per_s": items / wall,
        "steady_items_per_s": items / (last - first),
        "actors": len({row["pid"] for row in results}),
    }


def actor_rss_mb() -> float:
    """Summed RSS of this machine's stream actor processes (Linux /proc; Ray names them)."""
    total_kb = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            if not title.startswith(ACTOR_TITLES):
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:  # the process ended meanwhile
            continue
    return total_kb / 1024


def rss_phase(args: argparse.Namespace, bootstrap: str, work_dir: Path, bound: int) -> dict:
    config = bench_config(args, bootstrap, work_dir, max_in_flight=bound, resume_below=bound // 2)
    ensure_topics(config.kafka, stream_topics(config.kafka), args.partitions)
    publish_events(config.kafka, make_events(args.rss_events, 70_000_000, args.model_dir))
    job = StreamJob(config, "bench-rss").start()
    try:
        job.wait_ready()
        samples = []
        started = time.monotonic()
        while time.monotonic() - started < args.rss_seconds:
            stats = job.refresh()
            samples.append(
                (time.monotonic() - started, actor_rss_mb(), stats.in_flight, stats.proxies_total)
            )
            time.sleep(2.0)
    finally:
        job.stop(drain=False, timeout_s=60)
    rss = [s[1] for s in samples]
    return {
        "max_in_flight": bound,
        "rss_first_mb": rss[0],
        "rss_mid_mb": rss[len(rss) // 2],
        "rss_last_mb": rss[-1],
        "rss_max_mb": max(rss),
        "peak_in_flight": max(s[2] for s in samples),
        "proxies_written": samples[-1][3],
        "samples": samples,
    }


def ensure_model(model_dir: Path) -> None:
    """Train the default bundle unless ``model_dir`` holds one that fits the encoder."""
    defaults = AppConfig()
    config = with_updates(defaults, stream=with_updates(defaults.stream, model_dir=model_dir))
    problem = bundle_problem(config)
    if problem is None:
        return
    from idproxy_stream.training.bundle import train_model_bundle

    print(f"{problem}\ntraining the default bundle into {model_dir} ...", flush=True)
    train_model_bundle(AppConfig(), model_dir, progress=lambda m: print(m, flush=True))


def print_table(result: dict) -> None:
    bare, stream, rd, lat = result["bare"], result["stream"], result["ray_data"], result["latency"]
    rows = [
        (
            f"bare worker (1 process, best of 1/all threads: {bare['threads']})",
            f"{bare['items_per_s']:.0f}",
            "1.00",
        ),
        (
            f"stream ({result['workers']} workers x 1 thread, check + sqlite + commits)",
            f"{stream['items_per_s']:.0f}",
            f"{result['stream_vs_bare']:.2f}",
        ),
        (
            "Ray Data read_kafka + map_batches (steady)",
            f"{rd['steady_items_per_s']:.0f}",
            f"{rd['steady_items_per_s'] / bare['items_per_s']:.2f}",
        ),
        (
            "Ray Data read_kafka + map_batches (wall, incl. start-up)",
            f"{rd['wall_items_per_s']:.0f}",
            f"{rd['wall_items_per_s'] / bare['items_per_s']:.2f}",
        ),
    ]
    print(f"\nbest of {result['rounds']} alternating rounds, {bare['items']} events each")
    print(f"{'path':64s} {'items/s':>8s} {'x bare':>7s}")
    for name, rate, ratio in rows:
        print(f"{name:64s} {rate:>8s} {ratio:>7s}")
    print(
        f"\nstream / bare = {result['stream_vs_bare']:.2f} (target >= 0.9); "
        f"stream / Ray Data (steady) = {result['stream_vs_ray_data']:.2f} (target >= 1.0)"
    )
    print(
        f"latency at {lat['rate_per_s']:.0f} items/s (~half the sustained rate), "
        f"{lat['items']} events: p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms"
    )
    print(
        f"\nRSS of the job's actors over a {result['rss_events']:,}-event backlog "
        f"({result['rss_seconds']} s each):"
    )
    print(
        f"{'in-flight bound':>16s} {'first MB':>9s} {'mid MB':>8s} {'last MB':>8s} "
        f"{'max MB':>8s} {'peak in flight':>15s} {'rows written':>13s}"
    )
    for run in result["rss"]:
        print(
            f"{run['max_in_flight']:>16,} {run['rss_first_mb']:>9.0f} {run['rss_mid_mb']:>8.0f} "
            f"{run['rss_last_mb']:>8.0f} {run['rss_max_mb']:>8.0f} {run['peak_in_flight']:>15,} "
            f"{run['proxies_written']:>13,}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("artifacts/demo/model"),
        help="model bundle (trained on the synthetic default when missing)",
    )
    parser.add_argument("--items", type=int, default=3_000, help="events per throughput run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs; best of each")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--rss-events", type=int, default=100_000)
    parser.add_argument("--rss-seconds", type=float, default=60.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    args.model_dir = args.model_dir.resolve()
    ensure_model(args.model_dir)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with EmbeddedBroker(log_path=work_dir / "broker.log") as broker:
        # Logical CPUs for Ray's scheduler only: the stream job stays up (idle) while the
        # bare worker and Ray Data run, so the paths can alternate round by round.
        ray_config = {"temp_dir": str(work_dir / "ray"), "num_cpus": 4}
        ensure_ray(config_from_dict({"ray": ray_config}).ray)
        config = bench_config(args, broker.bootstrap_servers, work_dir)
        job = StreamJob(config, "bench").start()
        runs: dict[str, list[dict]] = {"bare": [], "stream": [], "ray_data": []}
        done = 0
        try:
            job.wait_ready()
            for round_ in range(args.rounds):
                events = make_events(args.items, 10_000_000 * (round_ + 1), args.model_dir)
                print(f"round {round_ + 1}: bare worker on {len(events)} events", flush=True)
                runs["bare"].append(bare_worker(args, config, events))
                print(f"round {round_ + 1}: stream over a backlog of {len(events)}", flush=True)
                runs["stream"].append(stream_backlog(job, config, events, done))
                done += len(events)
                print(f"round {round_ + 1}: Ray Data read_kafka + map_batches", flush=True)
                runs["ray_data"].append(ray_data_phase(args, config, events, round_))
            best_stream = max(run["items_per_s"] for run in runs["stream"])
            print(f"latency at half of {best_stream:.0f} items/s ...", flush=True)
            latency = stream_latency(args, job, config, 0.5 * best_stream, done)
        finally:
            job.stop(drain=False)
        rss = []
        for bound in (config.stream.max_in_flight, 10 * args.rss_events):
            print(f"RSS over {args.rss_events:,} events, in-flight bound {bound:,} ...", flush=True)
            rss.append(rss_phase(args, broker.bootstrap_servers, work_dir, bound))
    bare = max(runs["bare"], key=lambda run: run["items_per_s"])
    stream = max(runs["stream"], key=lambda run: run["items_per_s"])
    ray_data = max(runs["ray_data"], key=lambda run: run["steady_items_per_s"])
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": os.getloadavg(),
        },
        "encoder": "packaged all-MiniLM-L6-v2",
        "workers": args.workers,
        "batch": args.batch,
        "rounds": args.rounds,
        "bare": bare,
        "stream": stream,
        "ray_data": ray_data,
        "runs": runs,
        "latency": latency,
        "stream_vs_bare": stream["items_per_s"] / bare["items_per_s"],
        "stream_vs_ray_data": stream["items_per_s"] / ray_data["steady_items_per_s"],
        "rss_events": args.rss_events,
        "rss_seconds": args.rss_seconds,
        "rss": rss,
    }
    print_table(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
