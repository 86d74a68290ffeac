"""Batch feature extraction over a catalogue with Ray Data: items -> Parquet part files.

``ray.data.from_pandas`` (one block per batch) -> ``map_batches`` with a pool of
:class:`EncodeBatchWriter` actors, each holding one encoder (the pool settings of
``ExtractConfig``: ``num_workers`` actors, ``worker_num_cpus`` / ``worker_num_gpus`` and
``torch_threads_per_worker`` each, ``worker_queue_depth`` batches in flight per actor). Each
actor writes its batch straight to a Parquet part file and returns only per-item status, so
the (B, K, D) states never travel through the object store.

Output folder (must be visible to every actor: local disk on one node, shared storage on a
cluster):

- ``part-<content fingerprint>-<uuid>.parquet``:
  :class:`~idproxy_stream.encoders.features.FeatureTable` rows (item ids, global embeddings,
  clustered layer states; fingerprint, clusters and content contract in the schema metadata);
  read them all with ``read_feature_table(folder)``.
- ``clusters.json``: the content fingerprint and the layer clusters every part uses.

Resumable: items already in part files of the same content contract (encoder settings and
``encoder.text_fields``) are skipped, and the stored clusters are reused. A folder holding
features of another encoder or text is refused. Items whose image fails are encoded from text
and carry the failure's reason (see ``extract.py``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from idproxy_stream.config import (
    AppConfig,
    EncoderConfig,
    ExtractConfig,
    ImageInputConfig,
    LayerClusterConfig,
    with_updates,
)
from idproxy_stream.encoders.contract import (
    ContentContract,
    configured_contract,
    describe_mismatch,
    encoder_contract,
)
from idproxy_stream.encoders.extract import (
    by_text_length,
    calibration_positions,
    content_frame,
    encode_rows,
    feature_rows,
    fit_clusters_on_content,
)
from idproxy_stream.encoders.features import content_from_metadata, feature_files
from idproxy_stream.encoders.layers import LayerClusters
from idproxy_stream.encoders.registry import build_encoder, encoder_fingerprint
from idproxy_stream.errors import IdProxyError
from idproxy_stream.process import set_torch_threads
from idproxy_stream.progress import ProgressLog

logger = logging.getLogger(__name__)

CLUSTERS_FILE = "clusters.json"


class ExtractError(IdProxyError, ValueError):
    """An extraction cannot run as configured; the message says what to fix."""


@dataclass(frozen=True)
class ExtractSummary:
    """What an extraction run did.

    seconds: wall time of the whole call (calibration, actor start-up, encoding).
    calibration_seconds: fitting the layer clusters (0 when they were given or stored).
    encode_seconds: from the first batch's start to the last batch's end inside the actors.
    steady_items_per_second: throughput while every actor was busy: items of the batches
        that started after the last actor's first batch, over the time from that start to
        the last batch's end (0 when too few batches to tell).
    """

    output_path: Path
    encoder_fingerprint: str
    clusters: LayerClusters
    items_total: int
    items_skipped: int
    items_encoded: int
    truncated: int
    image_errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    calibration_seconds: float = 0.0
    encode_seconds: float = 0.0
    steady_items_per_second: float = 0.0

    @property
    def items_per_second(self) -> float:
        """Encoded items per second of wall time."""
        return self.items_encoded / self.seconds if self.seconds > 0 else 0.0

    @property
    def encode_items_per_second(self) -> float:
        """Encoded items per second once the actors run (start-up excluded)."""
        return self.items_encoded / self.encode_seconds if self.encode_seconds > 0 else 0.0


def actor_encoder_config(config: AppConfig) -> EncoderConfig:
    """The encoder config each actor runs: its device made explicit."""
    device = "cuda" if config.extract.worker_num_gpus > 0 else "cpu"
    encoder = config.encoder
    return with_updates(
        encoder,
        text=with_updates(encoder.text, device=device),
        internvl=with_updates(encoder.internvl, device=device),
    )


class EncodeBatchWriter:
    """Ray Data callable class: encode a batch of content rows and write it as a part file.

    ``(B rows: item_id, text, image_uri, image_bytes) -> (B rows: item_id, image_error,
    text_truncated, started, finished, worker)``; the features go to ``output_dir``.
    """

    def __init__(
        self,
        encoder_config: EncoderConfig,
        image_config: ImageInputConfig,
        clusters: dict,
        content: dict,
        output_dir: str,
        torch_threads: int,
    ) -> None:
        # Ray Data starts each of these actors in a process of its own: this is its entry point.
        set_torch_threads(torch_threads)
        self.encoder = build_encoder(encoder_config)
        self.content = ContentContract.from_dict(content)
        problem = describe_mismatch(
            self.content, encoder_contract(self.encoder, encoder_config.text_fields)
        )
        if problem is not None:
            raise ExtractError(
                f"the actor's encoder differs from the driver's ({problem}): the model files "
                "differ between nodes"
            )
        self.image_config = image_config
        self.clusters = LayerClusters.from_dict(clusters)
        self.output_dir = Path(output_dir)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        started = time.time()
        output, errors = encode_rows(self.encoder, batch, self.image_config)
        item_ids = batch["item_id"].to_numpy(dtype=np.int64)
        table = feature_rows(self.encoder, item_ids, output, self.clusters, errors, self.content)
        name = f"part-{self.content.fingerprint}-{uuid.uuid4().hex}.parquet"
        table.write_parquet(self.output_dir / name)
        finished = time.time()
        return pd.DataFrame(
            {
                "item_id": item_ids,
                "image_error": pd.Series(errors, dtype=object),
                "text_truncated": table.text_truncated,
                "started": started,
                "finished": finished,
                "worker": os.getpid(),
            }
        )


def _fit_clusters_task(
    encoder_config: EncoderConfig,
    sample: pd.DataFrame,
    layer_config: LayerClusterConfig,
    batch_size: int,
    image_config: ImageInputConfig,
    torch_threads: int,
) -> dict:
    """Ray task: fit layer clusters on a calibration sample, where the actors would run."""
    set_torch_threads(torch_threads)
    encoder = build_encoder(encoder_config)
    clusters = fit_clusters_on_content(encoder, sample, layer_config, batch_size, image_config)
    return clusters.to_dict()


def existing_item_ids(output_dir: Path, content: ContentContract) -> set[int]:
    """Item ids already written under ``output_dir`` under the content contract ``content``.

    Raises :class:`ExtractError` when the folder holds part files of another encoder or text,
    naming the settings that differ.
    """
    if not output_dir.exists():
        return set()
    done: set[int] = set()
    for path in feature_files(output_dir):
        found = content_from_metadata(pq.read_schema(path).metadata or {})
        problem = describe_mismatch(found, content)
        if problem is not None:
            raise ExtractError(
                f"{output_dir} holds features of another encoder or text ({path.name}: "
                f"{problem}): pass another output path or delete the folder"
            )
        done.update(pq.read_table(path, columns=["item_id"]).column("item_id").to_pylist())
    return done


def stored_clusters(output_dir: Path, content: ContentContract) -> LayerClusters | None:
    """Clusters saved in ``output_dir/clusters.json`` under ``content``, if any."""
    path = output_dir / CLUSTERS_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("content_fingerprint") != content.fingerprint:
        raise ExtractError(
            f"{path} belongs to content {saved.get('content_fingerprint')}, not "
            f"{content.fingerprint}: pass another output path or delete the folder"
        )
    return LayerClusters.from_dict(saved["clusters"])


def save_clusters(output_dir: Path, content: ContentContract, clusters: LayerClusters) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    payload = {"content_fingerprint": content.fingerprint, "clusters": clusters.to_dict()}
    (output_dir / CLUSTERS_FILE).write_text(json.dumps(payload, indent=2))


def batch_timing(timings: pd.DataFrame) -> dict[str, float]:
    """``encode_seconds`` and ``steady_items_per_second`` from per-item batch timings.

    ``timings`` has one row per item: its batch's ``started`` / ``finished`` (epoch s) and
    the ``worker`` (actor pid) that ran it.
    """
    if timings.empty:
        return {"encode_seconds": 0.0, "steady_items_per_second": 0.0}
    last_finish = float(timings["finished"].max())
    all_busy_from = float(timings.groupby("worker")["started"].min().max())
    steady = timings[timings["started"] >= all_busy_from]
    steady_seconds = last_finish - all_busy_from
    return {
        "encode_seconds": last_finish - float(timings["started"].min()),
        "steady_items_per_second": len(steady) / steady_seconds if steady_seconds > 0 else 0.0,
    }


def actor_resources(extract: ExtractConfig) -> dict[str, float]:
    """Ray resources of each encoder actor (and of the calibration task)."""
    resources = {"num_cpus": extract.worker_num_cpus}
    if extract.worker_num_gpus > 0:
        resources["num_gpus"] = extract.worker_num_gpus
    return resources


def fit_clusters_with_ray(
    config: AppConfig, encoder_config: EncoderConfig, content: pd.DataFrame
) -> LayerClusters:
    """Fit layer clusters on a calibration sample of ``content`` in one Ray task."""
    import ray

    extract = config.extract
    sample = content.iloc[calibration_positions(len(content), config.encoder.layers)]
    # The calibration task runs alone, so it may use every actor's threads.
    threads = extract.num_workers * extract.torch_threads_per_worker
    task = ray.remote(_fit_clusters_task).options(**actor_resources(extract))
    fitted = task.remote(
        encoder_config,
        sample,
        config.encoder.layers,
        extract.batch_size,
        config.encoder.images,
        threads,
    )
    return LayerClusters.from_dict(ray.get(fitted))


def run_encode_job(
    config: AppConfig,
    encoder_config: EncoderConfig,
    todo: pd.DataFrame,
    clusters: LayerClusters,
    content: ContentContract,
    output_dir: Path,
    progress: Callable[[int], None] | None,
) -> pd.DataFrame:
    """Run the actor pool over ``todo``; one status row per item (see EncodeBatchWriter)."""
    import ray

    extract = config.extract
    # One block per batch, so every actor gets work from the start.
    blocks = [
        todo.iloc[start : start + extract.batch_size]
        for start in range(0, len(todo), extract.batch_size)
    ]
    dataset = ray.data.from_pandas(blocks).map_batches(
        EncodeBatchWriter,
        fn_constructor_kwargs={
            "encoder_config": encoder_config,
            "image_config": config.encoder.images,
            "clusters": clusters.to_dict(),
            "content": content.to_dict(),
            "output_dir": str(output_dir),
            "torch_threads": extract.torch_threads_per_worker,
        },
        batch_size=extract.batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(
            size=extract.num_workers, max_tasks_in_flight_per_actor=extract.worker_queue_depth
        ),
        **actor_resources(extract),
    )
    results = []
    logged = ProgressLog(logger, "encode", total=len(todo), unit="items")
    for result in dataset.iter_batches(batch_size=None, batch_format="pandas"):
        results.append(result)
        logged.advance(len(result))
        if progress is not None:
            progress(len(result))
    return pd.concat(results, ignore_index=True) if results else pd.DataFrame()


def extract_features_ray(
    config: AppConfig,
    items: pd.DataFrame,
    output_path: Path | None = None,
    clusters: LayerClusters | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Encode ``items`` (the ``RecDataset.items`` table) with Ray Data into Parquet parts.

    ``clusters=None`` reuses the clusters stored in the output folder, else fits them on a
    calibration sample (one Ray task). ``progress`` is called with each finished batch's
    size. Returns an :class:`ExtractSummary`.
    """
    started = time.perf_counter()
    output_dir = Path(output_path if output_path is not None else config.extract.output_path)
    encoder_config = actor_encoder_config(config)
    fingerprint = encoder_fingerprint(encoder_config)
    contract = configured_contract(encoder_config)
    done = existing_item_ids(output_dir, contract)
    saved = stored_clusters(output_dir, contract)
    if clusters is not None and saved is not None and clusters != saved:
        raise ExtractError(
            f"{output_dir} was written with clusters {saved.boundaries}, not "
            f"{clusters.boundaries}: pass clusters=None to resume, or another output path"
        )
    clusters = clusters or saved
    content = content_frame(items, encoder_config.text_fields)
    todo = by_text_length(content[~content["item_id"].isin(done)]).reset_index(drop=True)
    logger.info(
        "extract: %d items, %d already written for %s, %d to encode",
        len(content),
        len(content) - len(todo),
        fingerprint,
        len(todo),
    )
    if clusters is None or len(todo):
        from idproxy_stream.cluster.local_ray import ensure_ray

        ensure_ray(config.ray)  # a local Ray listens on loopback only
    calibration_started = time.perf_counter()
    if clusters is None:
        clusters = fit_clusters_with_ray(config, encoder_config, content)
    calibration_seconds = time.perf_counter() - calibration_started
    save_clusters(output_dir, contract, clusters)
    results = pd.DataFrame()
    if len(todo):
        results = run_encode_job(
            config, encoder_config, todo, clusters, contract, output_dir, progress
        )
    reasons = Counter(r for r in results.get("image_error", []) if isinstance(r, str))
    summary = ExtractSummary(
        output_path=output_dir,
        encoder_fingerprint=fingerprint,
        clusters=clusters,
        items_total=len(content),
        items_skipped=len(content) - len(todo),
        items_encoded=len(results),
        truncated=int(results["text_truncated"].sum()) if len(results) else 0,
        image_errors=dict(reasons),
        seconds=time.perf_counter() - started,
        calibration_seconds=calibration_seconds,
        **batch_timing(results),
    )
    logger.info(
        "extract: encoded %d items in %.1f s (%.1f items/s; %.1f items/s with every actor busy)",
        summary.items_encoded,
        summary.seconds,
        summary.items_per_second,
        summary.steady_items_per_second,
    )
    return summary


def encode_dataset(
    config: AppConfig,
    output_path: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Load ``config.data`` and extract its items' features with :func:`extract_features_ray`.

    What ``idproxy encode`` and ``jobs/encode.py`` run.
    """
    from idproxy_stream.data.loading import load_dataset

    dataset = load_dataset(config.data)
    return extract_features_ray(config, dataset.items, output_path, progress=progress)
