"""Encoder throughput, and Ray Data extraction against the bare encoder, side by side.

Rows (all measured in one run, on the same synthetic items):

1. items/s of each encoder (packaged MiniLM; tiny random InternVL with images) in-process
   at several batch sizes, with 1 and ``--threads`` torch threads.
2. Ray Data extraction (``extract_features_ray``) over the same items with MiniLM, for a few
   (actors x torch threads per actor) layouts, against the bare in-process encoder at the
   same batch size: ratio = job items/s / bare items/s, both steady-state (every actor busy)
   and end-to-end (actor start-up included).
3. A random InternVL3-1B-shaped model in bfloat16 on GPU: items/s and the fraction of the
   compute-bound limit (FLOPs per item / measured bf16 matmul rate). Without a GPU it prints
   "not run: no GPU" (``--internvl-1b-random`` forces it, on CPU it is very slow).

Usage::

    python bench/encoders.py [--items 2000] [--json out.json] [--internvl-1b-random]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray starts workers at a lower CPU priority; on a machine shared with other processes that
# alone would slow the actors against the in-process baseline, so compare at equal priority.
os.environ.setdefault("RAY_worker_niceness", "0")

import torch

from idproxy_stream.config import (
    AppConfig,
    EncoderConfig,
    ExtractConfig,
    InternVLEncoderConfig,
    RayConfig,
    SyntheticDataConfig,
    TextEncoderConfig,
)
from idproxy_stream.data.synthetic import generate_synthetic
from idproxy_stream.encoders.base import ContentEncoder, build_encoder
from idproxy_stream.encoders.extract import by_text_length, content_frame, content_items
from idproxy_stream.encoders.layers import LayerClusters
from idproxy_stream.encoders.tiny_internvl import INTERNVL3_1B, save_tiny_internvl


def bare_items_per_second(encoder: ContentEncoder, items: list, batch_size: int) -> float:
    """In-process ``encoder.encode`` throughput over ``items`` (after one warm-up batch)."""
    encoder.encode(items[:batch_size])
    started = time.perf_counter()
    for start in range(0, len(items), batch_size):
        encoder.encode(items[start : start + batch_size])
    return len(items) / (time.perf_counter() - started)


def encoder_rows(args: argparse.Namespace, dataset, work_dir: Path) -> list[dict]:
    """Row group 1: each encoder at each batch size, on the first ``--encoder-items`` items."""
    rows = []
    # Batched as the extraction jobs batch: by text length.
    content = by_text_length(content_frame(dataset.items).iloc[: args.encoder_items])
    texts, _ = content_items(content, EncoderConfig().images, read_images=False)
    text_encoder = build_encoder(EncoderConfig(text=TextEncoderConfig()))
    tiny_dir = save_tiny_internvl(work_dir / "tiny-internvl")
    tiny = build_encoder(
        EncoderConfig(kind="internvl", internvl=InternVLEncoderConfig(model=str(tiny_dir)))
    )
    with_images, _ = content_items(content, EncoderConfig().images, read_images=True)
    for batch_size in args.batch_sizes:
        for name, encoder, items in (
            ("MiniLM-L6 (text)", text_encoder, texts),
            ("tiny InternVL (text+image)", tiny, with_images),
        ):
            row = {"encoder": name, "batch_size": batch_size}
            for threads in sorted({1, args.threads}):
                torch.set_num_threads(threads)
                row[f"items_per_s_{threads}_threads"] = bare_items_per_second(
                    encoder, items, batch_size
                )
            rows.append(row)
    torch.set_num_threads(args.threads)
    return rows


def best_bare_items_per_second(
    encoder, items: list, batch_size: int, threads: int
) -> tuple[float, int]:
    """Fastest in-process throughput over 1..``threads`` torch threads, and that thread count."""
    results = []
    for count in sorted({1, threads}):
        torch.set_num_threads(count)
        results.append((bare_items_per_second(encoder, items, batch_size), count))
    torch.set_num_threads(threads)
    return max(results)


def ray_rows(args: argparse.Namespace, dataset, work_dir: Path) -> list[dict]:
    """Row group 2: Ray Data extraction vs the bare encoder on the same items."""
    import ray

    from idproxy_stream.encoders.ray_extract import extract_features_ray

    content = by_text_length(content_frame(dataset.items))  # the job's batching
    texts, _ = content_items(content, EncoderConfig().images, read_images=False)
    bare_encoder = build_encoder(EncoderConfig(text=TextEncoderConfig()))
    clusters = LayerClusters(boundaries=(0, 2, 4, 6), num_layers=bare_encoder.num_layers)
    ray.init(num_cpus=args.threads, include_dashboard=False, _temp_dir=str(work_dir / "ray"))
    layouts = [tuple(int(part) for part in layout.split("x")) for layout in args.ray_layouts]
    rows = []
    try:
        for batch_size in args.ray_batch_sizes:
            for num_actors, threads in layouts:
                # Baseline measured right before each job, so both see the same machine load.
                bare, bare_threads = best_bare_items_per_second(
                    bare_encoder, texts, batch_size, args.threads
                )
                config = AppConfig(
                    extract=ExtractConfig(
                        num_workers=num_actors,
                        torch_threads_per_worker=threads,
                        worker_num_cpus=args.threads / num_actors,
                        batch_size=batch_size,
                    ),
                    ray=RayConfig(),
                )
                output = work_dir / f"ray-{batch_size}-{num_actors}x{threads}"
                summary = extract_features_ray(config, dataset.items, output, clusters=clusters)
                rows.append(
                    {
                        "layout": f"{num_actors} actors x {threads} threads",
                        "batch_size": batch_size,
                        "bare_items_per_s": bare,
                        "bare_threads": bare_threads,
                        "ray_steady_items_per_s": summary.steady_items_per_second,
                        "ray_end_to_end_items_per_s": summary.items_per_second,
                        "steady_ratio": summary.steady_items_per_second / bare,
                        "end_to_end_ratio": summary.items_per_second / bare,
                        "load_average_1m": os.getloadavg()[0],
                    }
                )
    finally:
        ray.shutdown()
    return rows


def internvl_flops_per_item(text_tokens: int) -> float:
    """Forward FLOPs of the InternVL3-1B shape for one item (one 448 px tile + text)."""
    shape = INTERNVL3_1B
    vision_tokens = (shape.image_size // shape.patch_size) ** 2 + 1
    width, inner = shape.vision_hidden, shape.vision_intermediate
    vision = shape.vision_layers * (
        2 * vision_tokens * (4 * width * width + 2 * width * inner)
        + 4 * vision_tokens * vision_tokens * width
    )
    image_tokens = shape.image_seq_length
    projector = 2 * image_tokens * (4 * width * shape.text_hidden + shape.text_hidden**2)
    tokens = image_tokens + text_tokens
    hidden, inner = shape.text_hidden, shape.text_intermediate
    kv_width = hidden // shape.text_heads * shape.text_kv_heads
    language = shape.text_layers * (
        2 * tokens * (2 * hidden * hidden + 2 * hidden * kv_width + 3 * hidden * inner)
        + 4 * tokens * tokens * hidden
    )
    return float(vision + projector + language)


def bf16_matmul_flops_per_second(device: str) -> float:
    """Measured dense bf16 matmul rate on ``device`` (8192^2 x 20 on GPU, 2048^2 x 3 on CPU)."""
    size, repeats = (8192, 20) if device == "cuda" else (2048, 3)
    left = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    right = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    left @ right
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        left @ right
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def internvl_1b_rows(args: argparse.Namespace, dataset, work_dir: Path) -> list[dict]:
    """Row group 3: random InternVL3-1B shape, bf16 on GPU (or forced on CPU)."""
    has_gpu = torch.cuda.is_available()
    if not has_gpu and not args.internvl_1b_random:
        return [{"encoder": "InternVL3-1B-shaped random, bf16", "result": "not run: no GPU"}]
    device = "cuda" if has_gpu else "cpu"
    model_dir = save_tiny_internvl(
        work_dir / "internvl3-1b-random", shape=INTERNVL3_1B, dtype=torch.bfloat16
    )
    encoder = build_encoder(
        EncoderConfig(
            kind="internvl",
            internvl=InternVLEncoderConfig(model=str(model_dir), device=device, dtype="bfloat16"),
        )
    )
    content = content_frame(dataset.items)
    items, _ = content_items(content, EncoderConfig().images, read_images=True)
    count = args.internvl_1b_items if has_gpu else 8
    batch_size = args.internvl_1b_batch_size
    items = items[:count]
    rate = bare_items_per_second(encoder, items, batch_size)
    tokenizer = encoder.processor.tokenizer
    text_tokens = sum(len(tokenizer(item.text)["input_ids"]) for item in items) / len(items)
    flops = internvl_flops_per_item(int(text_tokens) + 30)
    peak = bf16_matmul_flops_per_second(device)
    return [
        {
            "encoder": "InternVL3-1B-shaped random, bf16",
            "device": device,
            "batch_size": batch_size,
            "items_per_s": rate,
            "gflops_per_item": flops / 1e9,
            "matmul_tflops": peak / 1e12,
            "fraction_of_compute_bound": rate * flops / peak,
        }
    ]


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    if not rows:
        return
    columns = list(rows[0])
    cells = [[_format(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="items of the Ray comparison")
    parser.add_argument("--encoder-items", type=int, default=512)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--ray-batch-sizes", type=int, nargs="+", default=[64])
    parser.add_argument(
        "--ray-layouts",
        nargs="+",
        default=["2x1", "1x2", "4x1"],
        help="actors x torch threads per actor",
    )
    parser.add_argument("--internvl-1b-random", action="store_true")
    parser.add_argument("--internvl-1b-items", type=int, default=256)
    parser.add_argument("--internvl-1b-batch-size", type=int, default=16)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    dataset = generate_synthetic(
        SyntheticDataConfig(num_items=args.items, num_users=50, interactions_per_user=5)
    )
    with tempfile.TemporaryDirectory(prefix="bench-encoders-") as tmp:
        work_dir = Path(tmp)
        results = {
            "items": args.items,
            "threads": args.threads,
            "load_average_at_start": os.getloadavg(),
            "encoders": encoder_rows(args, dataset, work_dir),
            "ray_vs_bare": [] if args.skip_ray else ray_rows(args, dataset, work_dir),
            "internvl_1b": internvl_1b_rows(args, dataset, work_dir),
        }
    results["load_average_at_end"] = os.getloadavg()
    print(
        f"load average (1, 5, 15 min): start {results['load_average_at_start']}, "
        f"end {results['load_average_at_end']} on {os.cpu_count()} cores"
    )
    print_table(
        f"Encoder throughput ({args.encoder_items} synthetic items, {args.threads} threads)",
        results["encoders"],
    )
    print_table("Ray Data extraction vs bare encoder (MiniLM, same items)", results["ray_vs_bare"])
    print_table("InternVL3-1B-shaped random model", results["internvl_1b"])
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
