"""`idproxy ...` command line: parses arguments and calls into the package, nothing more.

Each command group lives in this file as a thin function; the work happens in the
package modules it imports lazily (so `idproxy --help` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="idproxy",
    help="IDProxy cold-start proxies: train, evaluate, encode, stream.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (defaults otherwise)")
]


def _load(config: Path | None):
    from idproxy_stream.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _in_process(app_config) -> None:
    """Process settings of a command that trains in this process (torch threads)."""
    from idproxy_stream.process import set_torch_threads

    set_torch_threads(app_config.ranker.num_threads)


@app.callback()
def _root() -> None:
    """IDProxy cold-start proxies: train, evaluate, encode, stream."""


@app.command()
def version() -> None:
    """Print the package version."""
    from idproxy_stream import __version__

    typer.echo(__version__)


# ------------------------------------------------------------------------- encode


@app.command()
def encode(
    config: ConfigOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="feature folder (default extract.output_path)"),
    ] = None,
) -> None:
    """Extract content features of the configured dataset's items with Ray Data (resumable)."""
    from idproxy_stream.encoders.ray_extract import encode_dataset

    summary = encode_dataset(_load(config), output)
    typer.echo(f"features: {summary.output_path} (encoder {summary.encoder_fingerprint})")
    typer.echo(f"layer clusters: {summary.clusters.boundaries} of {summary.clusters.num_layers}")
    typer.echo(
        f"items: {summary.items_total} total, {summary.items_skipped} already done, "
        f"{summary.items_encoded} encoded, {summary.truncated} texts truncated"
    )
    if summary.image_errors:
        errors = ", ".join(
            f"{reason}={count}" for reason, count in sorted(summary.image_errors.items())
        )
        typer.echo(f"images ignored (encoded from text): {errors}")
    typer.echo(
        f"time: {summary.seconds:.1f} s ({summary.calibration_seconds:.1f} s fitting layer "
        f"clusters), {summary.items_per_second:.1f} items/s end to end, "
        f"{summary.steady_items_per_second:.1f} items/s with every actor busy"
    )


ranker_app = typer.Typer(help="The reference CTR ranker.", no_args_is_help=True)
app.add_typer(ranker_app, name="ranker")

DatasetOption = Annotated[
    str | None, typer.Option("--dataset", help="synthetic | ml-100k | movielens-csv")
]
PathOption = Annotated[Path | None, typer.Option("--path", help="dataset folder")]
PlotsOption = Annotated[
    Path | None, typer.Option("--plots", help="plot side file (movielens100k_details.csv)")
]
PlotsCheckOption = Annotated[
    Path | None, typer.Option("--plots-check", help="imdb_id_check.csv: keep agreeing plots only")
]
PostersOption = Annotated[Path | None, typer.Option("--posters", help="folder of <movieId>.jpg")]
PosterMapOption = Annotated[
    Path | None, typer.Option("--poster-map", help="ml100k_item_to_movielens_id.csv")
]
SeedsOption = Annotated[
    str | None, typer.Option("--seeds", help="comma-separated seeds, e.g. 0,1,2")
]


def _with_data(config, dataset, path, plots=None, plots_check=None, posters=None, poster_map=None):
    """``config`` with the data section overridden by the command-line options given."""
    from idproxy_stream.config import ConfigError, config_from_dict

    data = config.data.model_dump()
    for key, value in {
        "name": dataset,
        "path": path,
        "plots_path": plots,
        "plots_check_path": plots_check,
        "posters_path": posters,
        "poster_map_path": poster_map,
    }.items():
        if value is not None:
            data[key] = value
    raw = {**config.model_dump(), "data": data}
    if posters is not None:
        # the folder the user names on the command line is one images may be read from
        images = raw["encoder"]["images"]
        images["allowed_roots"] = [*images["allowed_roots"], posters]
    try:
        return config_from_dict(raw, "command-line options")
    except ConfigError as error:
        typer.secho(str(error), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _seeds(text: str | None, default) -> list[int]:
    if text is None:
        return list(default)
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        typer.secho(f"--seeds must be comma-separated integers, got {text!r}", err=True)
        raise typer.Exit(2) from None


def _progress(message: str) -> None:
    typer.echo(message)


@ranker_app.command("train")
def ranker_train(
    config: ConfigOption = None,
    dataset: DatasetOption = None,
    path: PathOption = None,
    seeds: SeedsOption = "0,1,2",
    output: Annotated[Path | None, typer.Option(help="save split and rankers here")] = None,
) -> None:
    """Train the reference ranker on the warm split; print warm-test AUC/logloss per seed."""
    from idproxy_stream.eval.ranker_eval import run_ranker_benchmark

    app_config = _with_data(_load(config), dataset, path)
    _in_process(app_config)
    result = run_ranker_benchmark(app_config, _seeds(seeds, (0,)), output, _progress)
    typer.echo(
        f"warm-test AUC {result['auc_mean']:.4f} ± {result['auc_std']:.4f}, "
        f"logloss {result['logloss_mean']:.4f} ± {result['logloss_std']:.4f} "
        f"over {len(result['per_seed'])} seed(s); popularity baseline AUC "
        f"{result['popularity_auc']:.4f}"
    )


@app.command()
def train(
    config: ConfigOption = None,
    model_dir: Annotated[Path | None, typer.Option(help="bundle directory")] = None,
    version: Annotated[str | None, typer.Option(help="ProxyModel version name")] = None,
) -> None:
    """Train ranker (or reuse it), IDProxy and the ID-space index; publish the model."""
    from idproxy_stream.training.bundle import train_model_bundle

    app_config = _load(config)
    _in_process(app_config)
    report = train_model_bundle(
        app_config, model_dir or app_config.stream.model_dir, version, progress=_progress
    )
    typer.echo(f"published ProxyModel {report.version} in {report.model_dir}")
    typer.echo(
        "wall time per stage (s): "
        + ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in report.timings.items())
    )


@app.command("eval")
def evaluate(
    config: ConfigOption = None,
    dataset: DatasetOption = None,
    path: PathOption = None,
    plots: PlotsOption = None,
    plots_check: PlotsCheckOption = None,
    posters: PostersOption = None,
    poster_map: PosterMapOption = None,
    seeds: SeedsOption = None,
    output: Annotated[Path, typer.Option(help="report directory")] = Path("artifacts/eval"),
    title: Annotated[str, typer.Option(help="report title")] = "Cold-start evaluation",
    methods: Annotated[
        str | None,
        typer.Option(help="comma-separated subset of methods (default: all) and oracles"),
    ] = None,
    learning_curve: Annotated[
        str | None,
        typer.Option(
            help="also run the learning curve at these mature-item shares, e.g. 0.1,0.3,1"
        ),
    ] = None,
) -> None:
    """Run the cold-start protocol for every method and seed; write report.md/json + plots."""
    import shlex
    import sys

    from idproxy_stream.config import with_updates
    from idproxy_stream.eval.run import run_evaluation

    app_config = _with_data(_load(config), dataset, path, plots, plots_check, posters, poster_map)
    _in_process(app_config)
    if learning_curve:
        fractions = tuple(float(part) for part in learning_curve.split(","))
        eval_section = with_updates(app_config.eval, learning_curve_fractions=fractions)
        app_config = with_updates(app_config, eval=eval_section)
    command = "idproxy " + shlex.join(sys.argv[1:])
    from idproxy_stream.eval.protocol import METHODS, ORACLES

    chosen = methods.split(",") if methods else [*METHODS, *ORACLES]
    unknown = sorted(set(chosen) - {*METHODS, *ORACLES})
    if unknown:
        typer.secho(f"unknown methods {unknown}; known: {[*METHODS, *ORACLES]}", err=True)
        raise typer.Exit(2)
    report = run_evaluation(
        app_config,
        output,
        command,
        title,
        _seeds(seeds, app_config.eval.seeds),
        methods=[m for m in METHODS if m in chosen],
        oracles=[m for m in ORACLES if m in chosen],
        progress=_progress,
    )
    typer.echo((output / "report.md").read_text())
    gap = report["gap_closed_by_idproxy"]
    if gap is not None:
        typer.echo(f"IDProxy closes {100 * gap:.1f} % of the mean-ID -> oracle a+b+c gap")


# ------------------------------------------------------------------ stream (issue 5)

ImagesOption = Annotated[
    str, typer.Option("--images", help="inline (base64), uri (file://) or none")
]


@app.command()
def stream(config: ConfigOption = None) -> None:
    """Run the streaming job until SIGTERM/SIGINT, then drain in-flight work and commit."""
    import signal
    import sys
    import threading

    from idproxy_stream.stream.logs import configure_logging
    from idproxy_stream.stream.pipeline import run_until_stopped
    from idproxy_stream.stream.status import StatusLine

    app_config = _load(config)
    configure_logging(app_config.stream.log_level, app_config.stream.log_format)
    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        typer.echo(f"\n{signal.Signals(signum).name}: draining and committing ...", err=True)
        stop.set()
        for again in (signal.SIGTERM, signal.SIGINT):  # a second signal ends at once
            signal.signal(again, signal.SIG_DFL)

    def install_handlers() -> None:  # after ray.init, which installs its own SIGTERM handler
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, request_stop)

    status, tty, updates = StatusLine(), sys.stderr.isatty(), [0]

    def show(stats) -> None:
        line = status.update(stats)
        updates[0] += 1
        if tty:
            typer.echo("\r" + line, nl=False, err=True)
        elif updates[0] % 10 == 1:
            typer.echo(line, err=True)

    final = run_until_stopped(app_config, stop, show, on_started=install_handlers)
    committed = dict(sorted(final.committed.items()))
    typer.echo(
        f"\nstopped: {final.events_in} events, {final.proxies_total} proxies, "
        f"{final.dead_letters_total} dead letters, committed offsets {committed}"
    )


@app.command()
def publish(
    config: ConfigOption = None,
    limit: Annotated[int | None, typer.Option(help="send at most this many items")] = None,
    all_items: Annotated[
        bool, typer.Option("--all", help="also items already in the ranker's ID space")
    ] = False,
    images: ImagesOption = "inline",
    image_dir: Annotated[
        Path | None, typer.Option(help="--images uri: where synthetic images are written")
    ] = None,
    rate: Annotated[float | None, typer.Option(help="events per second (default: max)")] = None,
) -> None:
    """Send catalogue items (synthetic or MovieLens) to the input topic as NewItemEvents."""
    from idproxy_stream.stream.publish import publish_catalogue

    if images not in ("inline", "uri", "none"):
        typer.secho("--images must be inline, uri or none", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    app_config = _load(config)
    report = publish_catalogue(app_config, limit, not all_items, images, image_dir, rate)
    typer.echo(
        f"published {report.events} events to {app_config.kafka.topic} in {report.seconds:.2f} s "
        f"({report.events_per_second:,.0f}/s)"
    )


@app.command()
def demo(
    config: ConfigOption = None,
    work_dir: Annotated[Path, typer.Option(help="artefacts of the demo")] = Path("artifacts/demo"),
    items: Annotated[int, typer.Option(help="new items to stream")] = 300,
) -> None:
    """Embedded broker + training (or reuse) + stream + publish new items + report."""
    from idproxy_stream.demo import run_demo

    report = run_demo(work_dir, num_items=items, config_path=config, progress=_progress)
    typer.echo(report.render())


# ---------------------------------------------------------------- backfill (issue 6)


@app.command()
def backfill(
    config: ConfigOption = None,
    source: Annotated[str, typer.Option(help="catalogue | kafka")] = "catalogue",
    model_version: Annotated[
        str | None, typer.Option(help="version to compute with (default: backfill.model_version)")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="kafka: topic (default kafka.topic)")] = None,
    start: Annotated[
        str, typer.Option(help="kafka: earliest | latest | P:OFFSET,... (inclusive)")
    ] = "earliest",
    end: Annotated[str, typer.Option(help="kafka: latest | P:OFFSET,... (exclusive)")] = "latest",
    limit: Annotated[int | None, typer.Option(help="catalogue: the first N items only")] = None,
) -> None:
    """Recompute proxies with one model version for the catalogue or a Kafka offset range."""
    import json

    from idproxy_stream.backfill.catalogue import backfill_catalogue
    from idproxy_stream.backfill.kafka_range import backfill_offset_range, parse_offsets
    from idproxy_stream.config import with_updates

    app_config = _load(config)
    if model_version is not None:
        section = with_updates(app_config.backfill, model_version=model_version)
        app_config = with_updates(app_config, backfill=section)
    if source == "catalogue":
        report = backfill_catalogue(app_config, limit)
    elif source == "kafka":
        try:
            offsets = parse_offsets(start), parse_offsets(end)
        except ValueError as error:
            typer.secho(str(error), fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        report = backfill_offset_range(app_config, topic, *offsets)
    else:
        typer.secho("--source must be catalogue or kafka", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(json.dumps(report.to_dict()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
