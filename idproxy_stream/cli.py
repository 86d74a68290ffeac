"""`idproxy ...` command line: parses arguments and calls into the package, nothing more.

Each command group lives in this file as a thin function; the work happens in the
package modules it imports lazily (so `idproxy --help` stays fast).

Every failure a user can cause (an :class:`~idproxy_stream.errors.IdProxyError`) ends in one
line on stderr that names the setting or file and what to do, with exit code 2; ``--debug``
adds the traceback. Progress and logs go to stderr (``--log-level``, ``--log-format json``
for one JSON object per line), results to stdout. The global options may stand anywhere on
the command line (``idproxy train --config c.yaml --log-level DEBUG``).
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from idproxy_stream.errors import IdProxyError

logger = logging.getLogger("idproxy_stream.cli")


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


GLOBAL_OPTIONS = {"--log-level": True, "--log-format": True, "--debug": False}  # takes a value


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with the global options moved before the command, wherever they stood."""
    hoisted: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            takes_value = GLOBAL_OPTIONS[name] and "=" not in arg
            hoisted.extend(args[index : index + (2 if takes_value else 1)])
            index += 2 if takes_value else 1
            continue
        rest.append(arg)
        index += 1
    return [*hoisted, *rest]


class IdProxyGroup(TyperGroup):
    """The root command: global options anywhere; a user's mistake is one line and exit 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IdProxyError as error:
            if ctx.params.get("debug"):
                traceback.print_exc()
            if _logs_are_json():  # the error is one more JSON line, like every other
                logger.error(str(error), extra={"error": type(error).__name__, "exit_code": 2})
            else:
                typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None


def _logs_are_json() -> bool:
    from idproxy_stream.stream.logs import JsonLogFormatter

    return any(isinstance(h.formatter, JsonLogFormatter) for h in logging.getLogger().handlers)


app = typer.Typer(
    cls=IdProxyGroup,
    name="idproxy",
    help="IDProxy cold-start proxies: train, evaluate, encode, stream.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (defaults otherwise)")
]


@dataclass
class GlobalOptions:
    """What the root options said; None where the user gave nothing."""

    log_level: str | None = None
    log_format: str | None = None
    debug: bool = False


def _load(config: Path | None):
    from idproxy_stream.config import load_config

    return load_config(config)  # a ConfigError ends the command with its one-line message


def _configure_logging(options: GlobalOptions, level: str = "INFO", log_format: str = "text"):
    """Logging of this process: the command line's choice, else the given defaults."""
    from idproxy_stream.stream.logs import configure_logging

    configure_logging(options.log_level or level, options.log_format or log_format)


def _options(ctx: typer.Context) -> GlobalOptions:
    root = ctx.find_root()
    return root.obj if isinstance(root.obj, GlobalOptions) else GlobalOptions()


def _prepare_ray(ctx: typer.Context) -> None:
    """Before ray is imported: keep JSON logs one object per line (see prepare_ray_logging)."""
    from idproxy_stream.stream.logs import prepare_ray_logging

    prepare_ray_logging(_options(ctx).log_format or "text")


def _in_process(app_config) -> None:
    """Process settings of a command that trains in this process (torch threads)."""
    from idproxy_stream.process import set_torch_threads

    set_torch_threads(app_config.ranker.num_threads)


@app.callback()
def _root(
    ctx: typer.Context,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            "--log-level",
            help="default INFO (stream: stream.log_level)",
            envvar="IDPROXY_LOG_LEVEL",
            case_sensitive=False,
        ),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            help="json: one JSON object per line (default text; stream: stream.log_format)",
            envvar="IDPROXY_LOG_FORMAT",
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="show the traceback of an error, not just its line")
    ] = False,
) -> None:
    """IDProxy cold-start proxies: train, evaluate, encode, stream."""
    options = GlobalOptions(
        log_level.value if log_level else None, log_format.value if log_format else None, debug
    )
    ctx.obj = options
    _configure_logging(options)


@app.command()
def version() -> None:
    """Print the package version."""
    from idproxy_stream import __version__

    typer.echo(__version__)


# ------------------------------------------------------------------------- encode


@app.command()
def encode(
    ctx: typer.Context,
    config: ConfigOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="feature folder (default extract.output_path)"),
    ] = None,
) -> None:
    """Extract content features of the configured dataset's items with Ray Data (resumable)."""
    _prepare_ray(ctx)
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
    str | None, typer.Option("--dataset", help="synthetic | ml-100k | movielens-csv | table")
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
    from idproxy_stream.config import config_from_dict

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
    return config_from_dict(raw, "command-line options")


def _seeds(text: str | None, default) -> list[int]:
    if text is None:
        return list(default)
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        typer.secho(f"--seeds must be comma-separated integers, got {text!r}", err=True)
        raise typer.Exit(2) from None


def _progress(message: str) -> None:
    """Progress of a long step: a log line on stderr (JSON with ``--log-format json``)."""
    logger.info(message)


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
    id_table: Annotated[
        Path | None,
        typer.Option(
            help="no ranker: an exported ID table (.parquet, .safetensors or a folder of .npy)"
        ),
    ] = None,
) -> None:
    """Train ranker (or reuse it), IDProxy and the ID-space index; publish the model.

    With --id-table, only what needs no ranker: Stage 1 or ridge, the index, the bundle.
    """
    from idproxy_stream.training.bundle import train_model_bundle
    from idproxy_stream.training.id_table import train_id_table_bundle

    app_config = _load(config)
    _in_process(app_config)
    target = model_dir or app_config.stream.model_dir
    if id_table is not None:
        report = train_id_table_bundle(app_config, id_table, target, version, progress=_progress)
    else:
        report = train_model_bundle(app_config, target, version, progress=_progress)
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
    suite: Annotated[
        str | None,
        typer.Option(
            help="run a benchmark suite instead of one dataset: a packaged name (dev) or a "
            "suite YAML file; writes one report per dataset plus a combined one"
        ),
    ] = None,
    data_root: Annotated[
        Path,
        typer.Option(help="with --suite: the folder {data_root} in the suite's paths stands for"),
    ] = Path("../shared/data"),
    only: Annotated[
        str | None, typer.Option(help="with --suite: comma-separated subset of its datasets")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="with --suite: read back datasets already finished with the same config, "
            "seeds and methods instead of running them again"
        ),
    ] = False,
) -> None:
    """Run the cold-start protocol for every method and seed; write report.md/json + plots."""
    import shlex
    import sys

    from idproxy_stream.config import with_updates

    command = "idproxy " + shlex.join(sys.argv[1:])
    app_config = _load(config)
    _in_process(app_config)
    from idproxy_stream.eval.protocol import METHODS, ORACLES

    chosen = methods.split(",") if methods else [*METHODS, *ORACLES]
    unknown = sorted(set(chosen) - {*METHODS, *ORACLES})
    if unknown:
        typer.secho(f"unknown methods {unknown}; known: {[*METHODS, *ORACLES]}", err=True)
        raise typer.Exit(2)
    chosen_methods = [m for m in METHODS if m in chosen]
    chosen_oracles = [m for m in ORACLES if m in chosen]
    if suite is not None:
        _evaluate_suite(
            app_config,
            suite,
            data_root,
            output,
            command,
            seeds,
            only,
            chosen_methods,
            chosen_oracles,
            resume,
        )
        return
    from idproxy_stream.eval.run import run_evaluation

    app_config = _with_data(app_config, dataset, path, plots, plots_check, posters, poster_map)
    if learning_curve:
        fractions = tuple(float(part) for part in learning_curve.split(","))
        eval_section = with_updates(app_config.eval, learning_curve_fractions=fractions)
        app_config = with_updates(app_config, eval=eval_section)
    report = run_evaluation(
        app_config,
        output,
        command,
        title,
        _seeds(seeds, app_config.eval.seeds),
        methods=chosen_methods,
        oracles=chosen_oracles,
        progress=_progress,
    )
    typer.echo((output / "report.md").read_text())
    gap = report["gap_closed_by_idproxy"]
    if gap is not None:
        typer.echo(f"IDProxy closes {100 * gap:.1f} % of the mean-ID -> oracle a+b+c gap")


def _evaluate_suite(
    app_config, suite, data_root, output, command, seeds, only, methods, oracles, resume
) -> None:
    """``idproxy eval --suite``: every dataset of the suite, then the combined report."""
    from idproxy_stream.eval.suite import load_suite, run_suite

    loaded = load_suite(suite)
    run_suite(
        loaded,
        app_config,
        data_root,
        output,
        command,
        seeds=_seeds(seeds, loaded.seeds),
        only=only.split(",") if only else None,
        progress=_progress,
        methods=methods,
        oracles=oracles,
        resume=resume,
    )
    typer.echo((output / "report.md").read_text())


# --------------------------------------------------------------------------- data

data_app = typer.Typer(
    help="Datasets in the generic table format (docs/data.md).", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@data_app.command("export")
def data_export(
    output: Annotated[Path, typer.Option("--output", "-o", help="folder to write the tables to")],
    config: ConfigOption = None,
    dataset: DatasetOption = None,
    path: PathOption = None,
    plots: PlotsOption = None,
    plots_check: PlotsCheckOption = None,
    posters: PostersOption = None,
    poster_map: PosterMapOption = None,
    file_format: Annotated[str, typer.Option("--format", help="parquet | csv")] = "parquet",
) -> None:
    """Write the configured dataset (synthetic, MovieLens ...) as items + interactions tables."""
    from idproxy_stream.data.export import export_table_dataset
    from idproxy_stream.data.loading import load_dataset

    app_config = _with_data(_load(config), dataset, path, plots, plots_check, posters, poster_map)
    report = export_table_dataset(load_dataset(app_config.data), output, file_format)
    typer.echo(
        f"wrote {report.items} items to {report.items_path} and {report.interactions} "
        f"interactions to {report.interactions_path} ({report.images} images)"
    )
    typer.echo(f"load it with the data section of {report.config_path} (data.name: table)")


@data_app.command("check")
def data_check(config: ConfigOption = None, path: PathOption = None) -> None:
    """Load the configured dataset (e.g. data.name: table) and print its counts and split."""
    import json

    from idproxy_stream.data.loading import load_dataset
    from idproxy_stream.data.split import build_cold_start_split

    app_config = _with_data(_load(config), None, path)
    loaded = load_dataset(app_config.data)
    typer.echo(json.dumps(loaded.summary()))
    typer.echo(json.dumps(build_cold_start_split(loaded, app_config.split).counts()))


# ------------------------------------------------------------------ stream (issue 5)

ImagesOption = Annotated[
    str, typer.Option("--images", help="inline (base64), uri (file://) or none")
]


@app.command()
def stream(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Run the streaming job until SIGTERM/SIGINT, then drain in-flight work and commit."""
    import signal
    import sys
    import threading

    from idproxy_stream.stream.logs import prepare_ray_logging

    app_config = _load(config)
    options = _options(ctx)
    logging_settings = {"log_level": options.log_level, "log_format": options.log_format}
    section = app_config.stream.model_copy(
        update={k: v for k, v in logging_settings.items() if v is not None}
    )  # the actors log as the command line says too
    app_config = app_config.model_copy(update={"stream": section})
    _configure_logging(options, section.log_level, section.log_format)
    prepare_ray_logging(section.log_format)
    json_logs = section.log_format == "json"

    from idproxy_stream.stream.pipeline import run_until_stopped
    from idproxy_stream.stream.status import StatusLine

    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        logger.warning("%s: draining and committing ...", signal.Signals(signum).name)
        stop.set()
        for again in (signal.SIGTERM, signal.SIGINT):  # a second signal ends at once
            signal.signal(again, signal.SIG_DFL)

    def install_handlers() -> None:  # after ray.init, which installs its own SIGTERM handler
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, request_stop)

    status, live, updates = StatusLine(), sys.stderr.isatty() and not json_logs, [0]

    def show(stats) -> None:
        line = status.update(stats)
        updates[0] += 1
        if live:
            typer.echo("\r" + line, nl=False, err=True)
        elif updates[0] % 10 == 1:
            counts = {
                "events_in": stats.events_in,
                "proxies": stats.proxies_total,
                "dead_letters": stats.dead_letters_total,
                "in_flight": stats.in_flight,
                "lag": sum(stats.lag.values()),
            }
            logger.info(line, extra=counts)

    final = run_until_stopped(app_config, stop, show, on_started=install_handlers)
    committed = dict(sorted(final.committed.items()))
    if live:
        typer.echo("", err=True)
    typer.echo(
        f"stopped: {final.events_in} events, {final.proxies_total} proxies, "
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


@app.command()
def schema() -> None:
    """Print the JSON Schema of the NewItemEvent producers publish (from the pydantic model)."""
    import json

    from idproxy_stream.events import new_item_event_schema

    typer.echo(json.dumps(new_item_event_schema(), indent=2))


@app.command()
def broker(
    config: ConfigOption = None,
    port: Annotated[int, typer.Option(help="port to listen on (kafka.bootstrap_servers)")] = 9092,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    partitions: Annotated[
        int | None, typer.Option(help="create the config's topics with this many partitions")
    ] = None,
) -> None:
    """Run the embedded Kafka-protocol broker (tansu, in memory) until Ctrl-C, for local runs.

    With --config (and --partitions) it also creates the config's topics; the stream can create
    them itself with kafka.ensure_topics: true (as idproxy_stream/configs/local-stream.yaml does).
    """
    import signal
    import threading

    from idproxy_stream.stream.broker import EmbeddedBroker
    from idproxy_stream.stream.topics import ensure_topics, stream_topics

    app_config = _load(config) if config is not None else None
    with EmbeddedBroker(port=port, host=host) as running:
        if app_config is not None:
            kafka = app_config.kafka.model_copy(
                update={"bootstrap_servers": running.bootstrap_servers}
            )
            count = partitions or kafka.topic_partitions
            created = ensure_topics(kafka, stream_topics(kafka), count)
            logger.info("topics %s ready (%d partitions)", stream_topics(kafka), count)
            if created:
                logger.info("created %s", created)
        typer.echo(
            f"broker on {running.bootstrap_servers} (memory storage: everything is gone when "
            "it stops); Ctrl-C stops it"
        )
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):  # a handler, so no blocking call hides it
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
        typer.echo("stopping the broker", err=True)


# ---------------------------------------------------------------- backfill (issue 6)


@app.command()
def backfill(
    ctx: typer.Context,
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

    _prepare_ray(ctx)
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


# ---------------------------------------------------------------- ranker retrain (issue 13)


@app.command()
def realign(
    ctx: typer.Context,
    config: ConfigOption = None,
    ranker_checkpoint: Annotated[
        Path | None,
        typer.Option(
            help="the new ranker: ranker.checkpoint of the plugin, or a saved reference ranker"
        ),
    ] = None,
    version: Annotated[str | None, typer.Option(help="the new ProxyModel version")] = None,
    id_table: Annotated[
        Path | None, typer.Option(help="instead of a ranker: the new exported ID table")
    ] = None,
    skip_backfill: Annotated[
        bool, typer.Option("--skip-backfill", help="publish only; backfill later")
    ] = False,
) -> None:
    """Ranker-retrain runbook: re-align to the new ranker, publish + hot-swap, backfill."""
    import json

    _prepare_ray(ctx)
    from idproxy_stream.runbooks.retrain import realign as run_realign

    app_config = _load(config)
    _in_process(app_config)
    report = run_realign(
        app_config, ranker_checkpoint, version, not skip_backfill, _progress, id_table
    )
    typer.echo(json.dumps(report.to_dict(), default=float))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
