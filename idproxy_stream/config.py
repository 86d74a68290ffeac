"""Every setting of idproxy_stream, as frozen pydantic models, in one place.

A config is a YAML file whose top-level keys are the sections of :class:`AppConfig`
(``data``, ``split``, ``ranker``, ``encoder`` ...). Every model forbids unknown keys,
so a typo fails at start-up with the key and the file named, never deep inside a run.

Environment variables override the file: ``IDPROXY__<SECTION>__<KEY>=value``
(double underscores separate the levels, case-insensitive), for example
``IDPROXY__STREAM__NUM_WORKERS=4`` or ``IDPROXY__KAFKA__BOOTSTRAP_SERVERS=kafka:9092``.
Values are parsed as YAML scalars, so ``true``, ``4`` and ``[a, b]`` work.

Secrets (Redis password, Kafka SASL password) are never config values: the config
names the environment variable that holds them (``password_env``).
"""

from __future__ import annotations

import os
import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from idproxy_stream.errors import IdProxyError

ENV_PREFIX = "IDPROXY__"
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_INPUT_REPR = 200
# The message of a setting that names an env var; the value itself is never echoed (a secret
# pasted into ``password_env`` by mistake must not reach a terminal or Ray's log files).
ENV_NAME_PROBLEM = (
    "must be the name of an environment variable ([A-Za-z_][A-Za-z0-9_]*), not the secret "
    "itself: put the secret into that variable and name it here (the value is not shown)"
)


class ConfigError(IdProxyError, ValueError):
    """A configuration is invalid; the message names the file, the key and what to fix."""


def bounded_repr(value: Any, limit: int = MAX_INPUT_REPR) -> str:
    """A repr of ``value`` at most ``limit`` characters long, computed in bounded time and
    memory (nested and aliased structures, as a YAML billion-laughs builds, are cut short)."""
    shortener = reprlib.Repr()
    shortener.maxlevel = 3
    shortener.maxdict = shortener.maxlist = shortener.maxtuple = shortener.maxset = 6
    shortener.maxstring = shortener.maxother = shortener.maxlong = limit
    text = shortener.repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _env_name(value: str) -> str:
    if not ENV_NAME_PATTERN.fullmatch(value):
        raise ValueError(ENV_NAME_PROBLEM)
    return value


EnvVarName = Annotated[str, AfterValidator(_env_name)]
"""A setting that names an environment variable (``password_env``): checked, never echoed."""


def is_env_name_setting(key: str) -> bool:
    """Whether a dotted config key names an environment variable (``..._env``)."""
    return key.rsplit(".", 1)[-1].endswith("_env")


class FrozenModel(BaseModel):
    """Base for every config model: immutable, unknown keys are an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- data


class SyntheticDataConfig(FrozenModel):
    """Size and noise of the synthetic multimodal dataset (see ``data/synthetic.py``).

    Clicks follow ``sigmoid(click_scale * u.z + b_item + click_bias)``; item popularity
    (how often an item is shown) is log-normal with spread ``popularity_sigma``.
    """

    num_items: int = Field(2_000, ge=10)
    num_users: int = Field(1_000, ge=2)
    num_factors: int = Field(8, ge=2)
    num_topics: int = Field(8, ge=2, le=16, description="topics (text vocabularies, shapes)")
    interactions_per_user: int = Field(60, ge=1)
    image_size: int = Field(32, ge=8, le=512)
    text_noise: float = Field(0.3, ge=0.0, le=1.0, description="chance a word is off-topic")
    image_noise: float = Field(0.3, ge=0.0, le=1.0)
    with_images: bool = True
    popularity_sigma: float = Field(1.2, ge=0.0, description="log-normal spread of exposure")
    exposure_preference: float = Field(
        1.5, ge=0.0, description="how strongly a user's topic taste steers what they see"
    )
    click_scale: float = Field(2.5, gt=0.0, description="a in sigmoid(a * u.z + b_i + c)")
    click_bias: float = Field(-1.5, description="c in sigmoid(a * u.z + b_i + c)")
    item_bias_std: float = Field(0.5, ge=0.0, description="spread of the item bias b_i")
    popularity_click_effect: float = Field(
        0.3,
        description="how much an item's exposure popularity raises its click bias b_i "
        "(per standard deviation of log-popularity): large values make rare items click less",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _enough_items_per_user(self) -> SyntheticDataConfig:
        if self.interactions_per_user > self.num_items // 2:
            raise ValueError(
                "synthetic.interactions_per_user must be at most num_items // 2 "
                f"({self.num_items // 2}) so every user can see distinct items"
            )
        return self


class TableDataConfig(FrozenModel):
    """The generic table format (``data.name: table``, ``docs/data.md``): file names and columns.

    ``items`` and ``interactions`` are Parquet (``.parquet``) or CSV (``.csv``) files, relative
    to ``data.path`` unless absolute. ``idproxy data export`` writes this format from any other
    loader.
    """

    items: Path = Field(Path("items.parquet"), description="the items table, under data.path")
    interactions: Path = Field(
        Path("interactions.parquet"), description="the interactions table, under data.path"
    )
    label_column: Literal["label", "rating"] = Field(
        "label",
        description="label: a 0/1 column; rating: a numeric column, a click when >= "
        "data.click_threshold",
    )
    side_columns: tuple[str, ...] = Field(
        (),
        description="categorical item columns kept (as strings) besides the standard ones; "
        "encoder.text_fields may name them",
    )
    user_feature_columns: tuple[str, ...] = Field(
        (),
        description="categorical user columns of the interactions table; each user gets the "
        "value of their latest interaction",
    )


class DataConfig(FrozenModel):
    """Which dataset to load and where it lies."""

    name: Literal["synthetic", "ml-100k", "movielens-csv", "table"] = "synthetic"
    path: Path | None = None
    plots_path: Path | None = Field(
        None, description="IMDb plot side file (movielens100k_details.csv) or a CSV item_id,plot"
    )
    plots_check_path: Path | None = Field(
        None, description="imdb_id_check.csv; when given only rows that agree are used"
    )
    posters_path: Path | None = Field(None, description="folder of <movieId>.jpg posters")
    poster_map_path: Path | None = Field(
        None, description="ml100k_item_to_movielens_id.csv (ml-100k items -> movieId)"
    )
    click_threshold: float = Field(4.0, description="a rating >= this is a click")
    tags_max_timestamp: int | None = Field(
        None,
        description="movielens-csv: keep only tags written at or before this time (seconds); "
        "None keeps all tags, including ones written after an item's first ratings",
    )
    max_tags_per_item: int = Field(20, ge=0, description="movielens-csv: most frequent tags kept")
    synthetic: SyntheticDataConfig = SyntheticDataConfig()
    table: TableDataConfig = TableDataConfig()

    @model_validator(mode="after")
    def _path_needed_for_movielens(self) -> DataConfig:
        if self.name != "synthetic" and self.path is None:
            raise ValueError(f"data.path is required for data.name={self.name!r}")
        return self


class SplitConfig(FrozenModel):
    """Cold-start split (CVAR / Meta-Embedding protocol).

    warm: items with more than ``warm_min_interactions`` interactions; the ranker trains
    on their samples only. cold: items with ``cold_min..cold_max`` interactions; their
    samples sorted by time, the first ``warmup_size`` each form warm-up sets a, b, c and
    the rest is the cold test set.
    """

    warm_min_interactions: int = Field(60, ge=1)
    cold_min: int = Field(20, ge=1)
    cold_max: int = Field(60, ge=1)
    warmup_size: int = Field(5, ge=1)
    warm_valid_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    warm_test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    history_length: int = Field(20, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _ranges(self) -> SplitConfig:
        if self.cold_min > self.cold_max:
            raise ValueError("split.cold_min must be <= split.cold_max")
        if self.cold_max > self.warm_min_interactions:
            raise ValueError("split.cold_max must be <= split.warm_min_interactions")
        if 3 * self.warmup_size >= self.cold_min:
            raise ValueError(
                "split.cold_min must exceed 3 * split.warmup_size so every cold item keeps "
                "test rows after warm-up sets a, b, c"
            )
        return self


# -------------------------------------------------------------------------- ranker


class RankerConfig(FrozenModel):
    """The ranker IDProxy aligns to: the reference one (DIN target attention + DCN-v2 cross +
    MLP, trained here) or yours, loaded by import path (``adapter``, ``docs/ranker-adapter.md``).

    The other fields configure the reference ranker; a plugin reads ``adapter_settings``.
    """

    adapter: str | None = Field(
        None,
        description='"package.module:factory" whose factory(context) returns a RankerAdapter; '
        "None = the reference ranker",
    )
    adapter_settings: dict[str, Any] = Field(
        default_factory=dict, description="free settings passed to the adapter factory"
    )
    checkpoint: Path | None = Field(
        None, description="the plugin ranker's checkpoint, passed to the adapter factory"
    )
    id_dim: int = Field(16, ge=2)
    side_dim: int = Field(8, ge=2)
    item_side_features: bool = Field(
        False, description="feed item categories and year bucket to the ranker besides the ID"
    )
    attention_hidden: int = Field(32, ge=2)
    cross_layers: int = Field(2, ge=0)
    mlp_hidden: tuple[int, ...] = (64, 32)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    id_weight_decay: float = Field(0.0, ge=0, description="L2 on the looked-up ID embeddings")
    patience: int = Field(2, ge=1, description="early stopping on validation AUC")
    seed: int = 0
    num_threads: int = Field(
        2, ge=1, description="torch CPU threads of a process that trains (set at its start)"
    )


# ------------------------------------------------------------------------ encoders


class ImageInputConfig(FrozenModel):
    """Limits for images that come from users, enforced before decoding (``encoders/images.py``)."""

    allowed_roots: tuple[Path, ...] = Field(
        (), description="file:// images must resolve under one of these folders; () = no files"
    )
    max_bytes: int = Field(
        10_000_000, ge=1, description="encoded size limit, checked while reading"
    )
    max_pixels: int = Field(
        40_000_000, ge=1, description="width * height limit, read from the header"
    )
    http_timeout_s: float = Field(
        10.0,
        gt=0,
        description="deadline of one image fetch in all: connect, redirects, headers and body",
    )
    fetch_threads: int = Field(
        8, ge=1, description="a batch's image references are read concurrently by this many"
    )
    allow_http: bool = Field(
        False,
        description="fetch http(s):// images; off by default: workers fetch what strangers put "
        "into events, from inside the cluster",
    )
    http_allowed_hosts: tuple[str, ...] = Field(
        (),
        description="with allow_http: the only hosts fetched from (exact names, or "
        "'.example.com' for a domain and its subdomains); () = any public host",
    )
    http_allow_private_addresses: bool = Field(
        False,
        description="also fetch from hosts that resolve to private, loopback or link-local "
        "addresses (checked after DNS and after every redirect); tests and closed networks",
    )
    http_use_proxy_env: bool = Field(
        False, description="honour HTTP_PROXY / HTTPS_PROXY / NO_PROXY (ignored by default)"
    )
    allow_s3: bool = True
    allow_inline: bool = Field(True, description="data: URIs, raw base64 and raw bytes")


class TextEncoderConfig(FrozenModel):
    """Any Hugging Face encoder model (BERT/MiniLM family); default is the packaged MiniLM."""

    model: str | None = Field(None, description="local path or hub id; None = packaged MiniLM")
    max_tokens: int = Field(256, ge=8, description="longer texts are truncated (and counted)")
    batch_size: int = Field(64, ge=1)
    global_pooling: Literal["mean", "cls"] = "mean"
    segment_pooling: bool = Field(
        True,
        description="encode each line of an item's text (short fields; each long field) apart "
        "and average them, so a long description does not drown the title",
    )
    normalize: bool = True
    device: str = Field("auto", description="auto = cuda when available, else cpu")
    local_files_only: bool = True
    trust_remote_code: bool = False


class InternVLEncoderConfig(FrozenModel):
    """InternVL checkpoint in Hugging Face format, loaded with transformers-native classes."""

    model: str | None = Field(None, description="local path or hub id of an -hf checkpoint")
    max_text_tokens: int = Field(256, ge=8, description="item text is cut to this many tokens")
    batch_size: int = Field(8, ge=1)
    global_pooling: Literal["mean", "last"] = "mean"
    normalize: bool = True
    device: str = Field("auto", description="auto = cuda when available, else cpu")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="auto = bfloat16 on GPU, float32 on CPU"
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    image_backend: Literal["pil", "torchvision"] = Field(
        "pil", description="image processor backend; torchvision is faster where installed"
    )
    max_image_tiles: int | None = Field(
        None, ge=1, description="max tiles per image (processor's max_patches); None = checkpoint's"
    )
    local_files_only: bool = True
    trust_remote_code: bool = False
    prompt: str = "Describe this item for a recommender system."


class TextImageEncoderConfig(FrozenModel):
    """The image half of the ``text_image`` encoder (``encoders/text_image.py``).

    The text half is the ``text`` sub-config (model, token limit, pooling, device and torch
    threads, which the image model shares); this one holds only what the image half adds.
    """

    projection_seed: int = Field(
        0, description="seed of the fixed random orthogonal 1280 -> text-width image projection"
    )
    image_batch_size: int = Field(
        4, ge=1, description="images per EfficientNet pass; small is faster on CPU (cache-bound)"
    )
    normalize: bool = Field(
        True, description="L2-normalise the concatenated (text, image) global embedding"
    )


class LayerClusterConfig(FrozenModel):
    """Grouping of the encoder's L layers into K contiguous clusters (``encoders/layers.py``)."""

    num_clusters: int = Field(4, ge=1, description="K; clamped to the number of layers L")
    similarity: Literal["cka", "cosine"] = "cka"
    calibration_size: int = Field(512, ge=2, description="items encoded to fit the clusters")
    seed: int = 0


class EncoderConfig(FrozenModel):
    """Which content encoder to run and which of an item's fields it reads.

    Each kind has its own sub-config. Together with ``text_fields`` these settings are the
    *content contract* (``encoders/contract.py``): training records it in the model's manifest
    and the stream, the backfill and the reader refuse a model whose contract differs.
    """

    kind: Literal["text", "internvl", "text_image"] = "text"
    text_fields: tuple[str, ...] = Field(
        ("title", "categories", "tags", "description"),
        description="item fields the encoder reads, in this order (data/schema.py: "
        "item_content_text); training and serving must use the same ones",
    )
    text: TextEncoderConfig = TextEncoderConfig()
    internvl: InternVLEncoderConfig = InternVLEncoderConfig()
    text_image: TextImageEncoderConfig = TextImageEncoderConfig()
    images: ImageInputConfig = ImageInputConfig()
    layers: LayerClusterConfig = LayerClusterConfig()


class WorkerPoolConfig(FrozenModel):
    """A job's pool of encoder actors: how many, what each asks Ray for, its torch threads.

    One spelling for every job that runs encoder actors: ``extract``, ``stream`` and
    ``backfill`` each inherit these fields, and each actor pool is built from
    :meth:`worker_pool`. Keep ``worker_num_cpus`` fractional on small machines (a
    ``num_cpus=1`` actor holds a core for its life) and ``num_workers *
    torch_threads_per_worker`` at most the cores (more threads than cores halves throughput).
    """

    num_workers: int = Field(2, ge=1, description="encoder actors of the job (per source)")
    worker_num_cpus: float = Field(
        0.5, ge=0, description="Ray's logical CPUs per worker; fractional avoids starving tasks"
    )
    worker_num_gpus: float = Field(0.0, ge=0, description="GPUs per worker (1 on GPU nodes)")
    torch_threads_per_worker: int = Field(1, ge=1, description="torch CPU threads per worker")
    worker_queue_depth: int = Field(
        2, ge=1, description="calls queued per worker, so it never waits for its next batch"
    )

    def worker_pool(self) -> WorkerPoolConfig:
        """Just the pool settings (what an actor pool is built from)."""
        fields = WorkerPoolConfig.model_fields
        return WorkerPoolConfig(**{name: getattr(self, name) for name in fields})


class ExtractConfig(WorkerPoolConfig):
    """Batch feature extraction over a catalogue with Ray Data (see ``encoders/ray_extract.py``).

    The actor pool is :class:`WorkerPoolConfig`'s (``num_workers`` actors ...); the text the
    encoder reads is ``encoder.text_fields``.
    """

    output_path: Path = Path("artifacts/features")
    batch_size: int = Field(64, ge=1)


# ------------------------------------------------------------------------- IDProxy


class Stage1Config(FrozenModel):
    """Coarse proxy: contrastive alignment of content to L2-normalised mature ID embeddings."""

    tau: int = Field(20, ge=1, description="mature = at least tau interactions in training")
    objective: Literal["contrastive", "ridge"] = Field(
        "contrastive",
        description="contrastive: the paper's projector (InfoNCE, plus regression_weight); "
        "ridge: a linear projector fitted in closed form to the raw IDs (penalty by 5-fold "
        "cross-validation), the other training settings unused",
    )
    hidden_dim: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    batch_size: int = Field(512, ge=2)
    epochs: int = Field(200, ge=1)
    temperature: float = Field(0.1, gt=0)
    learn_temperature: bool = True
    center_targets: bool = Field(
        True,
        description="contrast against normalize(id - mean mature id) rather than normalize(id)",
    )
    holdout_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    contrastive_weight: float = Field(
        1.0, ge=0.0, description="weight of the symmetric InfoNCE term on directions"
    )
    regression_weight: float = Field(
        0.0,
        ge=0.0,
        description="weight of a least-squares term on the raw offset (id - centre), relative "
        "to its variance; > 0 makes the projector learn a length per item (unit_offsets off) "
        "and early-stops on held-out mature items' squared error",
    )
    patience: int = Field(
        20, ge=1, description="with a regression term: epochs without held-out improvement"
    )
    scale_selection: Literal["least_squares", "ranker_auc"] = Field(
        "least_squares",
        description="the coarse proxy's length: the least-squares scale on held-out mature "
        "items, or the multiple of it (scale_multipliers) under which the frozen ranker ranks "
        "the held-out items best (the validation sets of stage2.selection)",
    )
    scale_multipliers: tuple[float, ...] = Field(
        (0.5, 1.0, 1.5, 2.0, 3.0, 4.0), min_length=1, description="tried with ranker_auc"
    )
    seed: int = 0

    @model_validator(mode="after")
    def _some_objective(self) -> Stage1Config:
        if self.contrastive_weight == 0 and self.regression_weight == 0:
            raise ValueError(
                "stage1.contrastive_weight and stage1.regression_weight are both 0: "
                "give at least one a positive weight"
            )
        return self


class Stage2Config(FrozenModel):
    """Fine proxy: adaptor over layer clusters + residual gate, trained through the ranker."""

    hidden_dim: int = Field(64, ge=1)
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(1024, ge=2)
    epochs: int = Field(10, ge=1)
    history_proxy_probability: float = Field(0.0, ge=0.0, le=1.0)
    gate_closed: bool = Field(False, description="force g = 0: the proxy is the Stage 1 proxy")
    use_rare_items: bool = Field(
        True,
        description="also train on logged clicks of items that are neither mature nor cold",
    )
    max_rare_samples: int | None = Field(
        None, ge=1, description="cap on those extra samples (a seeded random subset); None = all"
    )
    item_weight_power: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="each training sample weighs n_item^-power (n_item = the item's training "
        "samples), normalised to mean 1: 0 = every sample alike (popular items dominate), "
        "1 = every item alike",
    )
    new_like_holdout_fraction: float = Field(
        0.3,
        ge=0.0,
        lt=1.0,
        description="share of the rare items (never seen by the ranker, like new items) held "
        "out of training to select and guard Stage 2",
    )
    selection: Literal["mature", "new_like", "both"] = Field(
        "new_like",
        description="which held-out items' AUC selects the epoch, the ridge blend and guards "
        "serving: held-out mature items, held-out rare items (the mature ones when there are "
        "no usable rare items), or the mean of both",
    )
    min_gain: float = Field(
        0.0,
        ge=0.0,
        description="serve Stage 2 only if its selection AUC beats the coarse proxy's by more "
        "than this; otherwise the published model is the coarse proxy (gate closed)",
    )
    ridge_fallback: bool = Field(
        True,
        description="also fit a ridge-regression coarse proxy (its scale chosen through the "
        "ranker) and serve whichever blend of it with IDProxy's proxy (ridge_weights) ranks "
        "the validation items best",
    )
    ridge_weights: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5, 0.75, 1.0),
        min_length=1,
        description="with ridge_fallback: the ridge proxy's shares w tried in the served proxy "
        "(1 - w) * IDProxy + w * ridge; 0 = IDProxy's proxy alone, 1 = the ridge proxy alone",
    )

    @field_validator("ridge_weights")
    @classmethod
    def _weights_in_unit_interval(cls, weights: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0.0 <= w <= 1.0 for w in weights):
            raise ValueError(f"every ridge weight must lie in [0, 1], got {list(weights)}")
        return weights

    weight_average_decay: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="keep an exponential moving average of the adaptor's and gate's weights "
        "(this decay per optimiser step) and select, guard and serve the averaged weights; "
        "0 = the raw weights",
    )
    patience: int = Field(2, ge=1)
    seed: int = 0


# ------------------------------------------------------------------ index + stores


class IndexConfig(FrozenModel):
    """Faiss index over the mature ID space and the kNN "void" check (see ``index/``).

    The index holds the L2-normalised ID embeddings of mature items (inner product = cosine).
    ``kind="auto"`` picks Flat (exact) up to ``flat_max_size`` members and ``large_kind``
    beyond. The void score of a proxy is the Euclidean distance between unit vectors to its
    ``k``-th neighbour (Sun et al., ICML 2022); the threshold keeps ``keep_fraction`` of
    in-distribution calibration queries.
    """

    kind: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    flat_max_size: int = Field(
        50_000,
        ge=1,
        description="auto: Flat up to this many IDs; beyond, HNSW checks faster (bench/index.py)",
    )
    large_kind: Literal["hnsw", "ivf"] = Field("hnsw", description="auto: kind beyond Flat")
    k: int = Field(10, ge=1, description="neighbours per proxy; the void score uses the k-th")
    keep_fraction: float = Field(0.95, gt=0.0, le=1.0)
    calibration_size: int = Field(10_000, ge=10, description="mature items used to calibrate")
    seed: int = 0
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(100, ge=8)
    hnsw_ef_search: int = Field(128, ge=8)
    ivf_nlist: int = Field(1024, ge=1)
    ivf_nprobe: int = Field(16, ge=1)
    void_policy: Literal["flag", "knn_average", "dead_letter"] = "flag"
    num_threads: int | None = Field(
        None,
        ge=1,
        description="faiss OpenMP threads of a process that serves the index, set when it "
        "starts (the stream's sinks: None = 1 there, since small batches on more threads than "
        "free cores wait on each other); None elsewhere keeps faiss' default of all cores",
    )


class SqliteStoreConfig(FrozenModel):
    """Embedded store: one file, WAL journal, one writer and any number of readers."""

    path: Path = Path("artifacts/proxies.sqlite")
    busy_timeout_ms: int = Field(5_000, ge=0)
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        description="FULL: a committed upsert survives power loss too; NORMAL (WAL): survives "
        "a process kill but the last commits may roll back on power loss",
    )


class RedisStoreConfig(FrozenModel):
    """Online store on Redis; the password comes from the env var ``password_env`` names."""

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "idproxy:"
    ttl_s: int | None = Field(
        None, ge=1, description="expiry after each write (refreshed by rewrites); see store.ttl_s"
    )
    username_env: EnvVarName | None = None
    password_env: EnvVarName | None = Field(
        None, description="name of the env var with the password"
    )
    ssl: bool = False
    ssl_ca_certs: Path | None = None
    socket_timeout_s: float = Field(5.0, gt=0)
    pipeline_size: int = Field(1_000, ge=1, description="commands per pipeline round trip")


class ParquetStoreConfig(FrozenModel):
    """Append-only offline log: ``dt=YYYY-MM-DD/model_version=v/part-*.parquet``."""

    path: Path = Path("artifacts/proxy_log")
    row_group_size: int = Field(10_000, ge=1, description="rows buffered before a file is written")


BUILTIN_STORES = ("sqlite", "redis", "parquet")


class FeastConfig(FrozenModel):
    """Mirror every proxy into Feast's online layout (``store/feast.py``), so Feast's
    ``get_online_features(["item_proxy:proxy", ...])`` serves them. Match your feature repo:
    ``project``, the feature view's name, the entity's join key and its value type."""

    online: Literal["redis", "sqlite"] = "redis"
    project: str = Field("idproxy", min_length=1, description="feature_store.yaml project")
    feature_view: str = Field("item_proxy", min_length=1)
    join_key: str = Field("item_id", min_length=1, description="the Entity's join key")
    entity_key_dtype: Literal["int64", "string"] = Field(
        "int64", description="the Entity's value type (Feast's key bytes include it)"
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="online: redis")
    sqlite_path: Path = Field(Path("data/online_store.db"), description="online: sqlite")


class StoreConfig(FrozenModel):
    """Where proxies land: one online store and, optionally, the Parquet offline log too.

    ``online`` is a built-in backend (``sqlite``, ``redis``, ``parquet``, configured by the
    section of that name) or your own ``"package.module:Class"``, a
    :class:`~idproxy_stream.store.base.FeatureStore` subclass whose ``from_config`` receives
    ``settings``.
    """

    online: str = Field(
        "sqlite", description='sqlite | redis | parquet | "package.module:Class" (a FeatureStore)'
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="passed to a plugin store's from_config"
    )
    ttl_s: int | None = Field(
        None,
        ge=1,
        description="the cold-start window: a proxy expires this long after its item's "
        "created_at (by then the ranker should serve the item's own ID); None = never. "
        "Redis only (EXPIREAT on the item's keys, and on its Feast row with store.feast "
        "online: redis); a proxy already past its window is not written",
    )
    offline_log: bool = False
    feast: FeastConfig | None = Field(
        None, description="also write Feast's online layout (None: do not)"
    )
    sqlite: SqliteStoreConfig = SqliteStoreConfig()
    redis: RedisStoreConfig = RedisStoreConfig()
    parquet: ParquetStoreConfig = ParquetStoreConfig()

    @model_validator(mode="after")
    def _known_backend_or_import_path(self) -> StoreConfig:
        if self.online not in BUILTIN_STORES and ":" not in self.online:
            raise ValueError(
                f"store.online must be one of {', '.join(BUILTIN_STORES)} or 'package.module:Class'"
            )
        return self


class ReaderConfig(FrozenModel):
    """Switch-over policy for feature-store consumers (see ``store/reader.py``)."""

    maturity_threshold: int = Field(20, ge=1, description="interactions before the ID is used")
    serving_model_version: str | None = Field(
        None, description="proxy model version to serve; None = newest computed_at of any"
    )
    fallback: Literal["mean_id", "zeros"] = "mean_id"


# ------------------------------------------------------------------------- stream


class KafkaConfig(FrozenModel):
    """Kafka (or any Kafka-protocol broker) the stream reads and writes.

    The consumer-group timings default to production-like values; against the embedded tansu
    broker use ``session_timeout_ms: 2000`` and ``heartbeat_interval_ms: 500`` so a group forms
    in about a second (tansu holds a join for about half the session timeout). Secrets come
    from the environment variables ``sasl_username_env`` / ``sasl_password_env`` name.

    Any other client setting passes through ``consumer_extra`` / ``producer_extra`` (as Quix
    Streams' ``consumer_extra_config``), for mTLS, OAUTHBEARER or tuned fetch sizes::

        kafka:
          security_protocol: SSL
          consumer_extra: {ssl_certfile: /etc/kafka/client.pem, ssl_keyfile: /etc/kafka/client.key,
                           ssl_password_env: KAFKA_KEY_PASSWORD, fetch_max_bytes: 104857600}
          producer_extra: {ssl_certfile: /etc/kafka/client.pem, ssl_keyfile: /etc/kafka/client.key,
                           ssl_password_env: KAFKA_KEY_PASSWORD, compression_type: lz4}
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "new-items"
    dead_letter_topic: str = "new-items.dlq"
    output_topic: str | None = Field(None, description="also publish ProxyRecord JSON here")
    group_id: str = "idproxy-stream"
    client_id: str = "idproxy"
    session_timeout_ms: int = Field(10_000, ge=500)
    heartbeat_interval_ms: int = Field(1_000, ge=100)
    max_poll_interval_ms: int = Field(300_000, ge=1_000)
    request_timeout_ms: int = Field(
        30_000, ge=1_000, description="also bounds one offset commit attempt"
    )
    fetch_max_wait_ms: int = Field(
        50, ge=0, description="how long the broker may hold a fetch; low values cut latency"
    )
    max_poll_records: int = Field(500, ge=1)
    check_crcs: bool = Field(
        True,
        description="verify record CRCs (kafka-python does it in pure Python: ~1 ms per "
        "batch unless the crc32c package is installed)",
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    producer_linger_ms: int = Field(5, ge=0)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username_env: EnvVarName | None = None
    sasl_password_env: EnvVarName | None = None
    ssl_cafile: Path | None = None
    max_event_bytes: int = Field(5_000_000, ge=1, description="larger records are dead-lettered")
    dead_letter_value_bytes: int = Field(
        4_096,
        ge=0,
        le=1_000_000,
        description="a dead letter holds at most this many bytes of the record's value (and "
        "key), plus the value's length and SHA-256",
    )
    max_future_skew_s: float = Field(
        86_400.0,
        ge=0,
        allow_inf_nan=False,
        description="an event whose created_at is further than this in the future is "
        "dead-lettered (created_at_out_of_range): it would pin its row, the order key "
        "compares created_at first",
    )
    unknown_event_fields: Literal["ignore", "dead_letter"] = Field(
        "ignore",
        description="fields a NewItemEvent does not define: ignore them (producers may add "
        "fields before consumers learn them), or dead-letter the event (strict)",
    )
    consumer_extra: dict[str, Any] = Field(
        default_factory=dict,
        description="more kafka-python KafkaConsumer settings, passed through as given "
        "(ssl_certfile, fetch_max_bytes ...); the admin client takes those it knows. A key "
        "ending in _env names the environment variable holding the value (secrets)",
    )
    producer_extra: dict[str, Any] = Field(
        default_factory=dict,
        description="more kafka-python KafkaProducer settings, passed through as given "
        "(compression_type, ssl_certfile ...); keys ending in _env as in consumer_extra",
    )
    ensure_topics: bool = Field(
        False, description="create missing topics at start (embedded broker, demos, tests)"
    )
    topic_partitions: int = Field(4, ge=1, description="partitions of topics ensure_topics creates")

    @model_validator(mode="after")
    def _extra_env_names(self) -> KafkaConfig:
        for section in ("consumer_extra", "producer_extra"):
            for key, value in getattr(self, section).items():
                if key.endswith("_env") and not (
                    isinstance(value, str) and ENV_NAME_PATTERN.fullmatch(value)
                ):
                    raise ValueError(f"kafka.{section}.{key} {ENV_NAME_PROBLEM}")
        return self


class StreamConfig(WorkerPoolConfig):
    """The streaming job: actors, batching, backpressure, commits, model swaps, operations.

    Resources: ``num_workers * worker_num_cpus + source_num_cpus + sink_num_cpus`` logical
    CPUs per source (``num_sources`` of them); the worker pool is :class:`WorkerPoolConfig`'s.
    """

    model_dir: Path = Field(
        Path("artifacts/model"), description="the model bundle: registry, ID space, index"
    )
    num_sources: int = Field(1, ge=1, description="consumers in the group (<= partitions)")
    source_num_cpus: float = Field(0.25, ge=0)
    sink_num_cpus: float = Field(0.25, ge=0)
    max_batch_size: int = Field(32, ge=1, description="dynamic batching: flush at this size")
    max_wait_ms: int = Field(
        20, ge=0, description="dynamic batching: or once the oldest event waited this long"
    )
    max_in_flight: int = Field(
        2_000, ge=1, description="records received but not yet written: pause partitions here"
    )
    resume_below: int = Field(1_000, ge=0, description="resume paused partitions at this count")
    max_text_chars: int = Field(20_000, ge=1, description="longer event text is dead-lettered")
    image_errors: Literal["dead_letter", "text_only"] = Field(
        "dead_letter",
        description="an event whose image fails (bomb, outside roots, unreachable ...): "
        "dead-letter it, or encode its text alone",
    )
    skip_mature_items: bool = Field(
        True,
        description="dead-letter events for items whose ID embedding the ranker already "
        "serves (reader.maturity_threshold interactions) instead of computing a proxy",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="failures of a batch before it is split in halves, and raises of a "
        "one-event batch before its event is dead-lettered (processing_failed)",
    )
    max_worker_deaths: int = Field(
        10,
        ge=1,
        description="worker deaths (OOM, pre-emption: not the event's fault, so not attempts) "
        "a one-event batch may meet before its event is dead-lettered (worker_died); at least "
        "max_attempts",
    )
    batch_deadline_s: float = Field(
        120.0,
        gt=0,
        description="a batch without a result this long after it reached a worker (or the "
        "sink) has its actor replaced and is re-sent, as after a death (a frozen worker)",
    )
    max_actor_start_failures: int = Field(
        5,
        ge=1,
        description="failures in a row of one role's actor to start (its constructor raised; "
        "each replaced after a growing back-off, its batches re-sent uncounted) before the "
        "job stops with the cause",
    )
    commit_interval_ms: int = Field(100, ge=0, description="at most one offset commit per interval")
    drain_timeout_s: float = Field(60.0, gt=0, description="on stop: wait this long for in-flight")
    model_poll_interval_s: float = Field(5.0, gt=0, description="how often workers read LATEST")
    metrics_port: int | None = Field(9108, ge=0, description="Prometheus /metrics; None = off")
    metrics_host: str = Field(
        "127.0.0.1", description="address /metrics listens on; 0.0.0.0 to let Prometheus in"
    )
    status_interval_s: float = Field(1.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _resume_below_bound(self) -> StreamConfig:
        if self.resume_below >= self.max_in_flight:
            raise ValueError("stream.resume_below must be lower than stream.max_in_flight")
        if self.max_worker_deaths < self.max_attempts:
            raise ValueError("stream.max_worker_deaths must be at least stream.max_attempts")
        return self


class RayConfig(FrozenModel):
    """Where the stream's actors run: a local Ray (default) or a cluster's address."""

    address: str | None = Field(None, description="None = start a local Ray; 'auto' = join one")
    num_cpus: int | None = Field(None, ge=1, description="local Ray only; None = all cores")
    namespace: str = "idproxy"
    temp_dir: Path | None = Field(None, description="local Ray only: session files go here")


class EvalConfig(FrozenModel):
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    output_dir: Path = Path("artifacts/eval")
    warmup_learning_rate: float = Field(1e-2, gt=0)
    warmup_epochs: int = Field(1, ge=1)
    learning_curve_fractions: tuple[float, ...] = Field(
        (), description="shares of mature items for the learning curve, e.g. [0.1, 0.3, 1.0]"
    )


# ---------------------------------------------------------- cluster + backfill (issue 6)

RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


class ClusterConfig(FrozenModel):
    """Placement on a multi-node Ray cluster: the custom resources each kind of actor asks for.

    Encoder workers ask for GPUs through ``stream.worker_num_gpus`` (and
    ``backfill.worker_num_gpus``, ``extract.worker_num_gpus``); sources and sinks should stay
    off the GPU nodes. Node types advertise custom resources (``resources:`` of a node type in
    ``ray_cluster.yaml``, ``rayStartParams.resources`` in KubeRay) and these mappings ask for
    them, e.g. ``source_resources: {cpu_node: 0.01}`` with only CPU nodes advertising
    ``cpu_node``. A small amount only steers placement; it never limits how many actors fit.
    ``worker_resources`` picks a worker node type the same way (``{a100_node: 0.01}``), so a
    second worker type is a node type plus a config value, not code. Empty = no constraint
    (a laptop, a one-node cluster).
    """

    source_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each source actor asks for"
    )
    sink_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each sink actor asks for"
    )
    worker_resources: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources each encoder worker asks for"
    )

    @model_validator(mode="after")
    def _custom_resources_only(self) -> ClusterConfig:
        for role in ("source", "sink", "worker"):
            for name, amount in getattr(self, f"{role}_resources").items():
                if name in RAY_BUILTIN_RESOURCES:
                    raise ValueError(
                        f"cluster.{role}_resources.{name}: CPUs, GPUs and memory are asked for "
                        "by the num_cpus / num_gpus settings of stream, backfill and extract; "
                        "list only custom resources here"
                    )
                if not amount > 0:
                    raise ValueError(
                        f"cluster.{role}_resources.{name} must be > 0 (got {amount}): use a small "
                        "amount such as 0.01 to steer placement"
                    )
        return self


class BackfillConfig(WorkerPoolConfig):
    """Recomputing proxies for a catalogue or a Kafka offset range (``backfill/``).

    Uses the stream's worker and sink (same encoder, checks and stores) with its own pool
    (:class:`WorkerPoolConfig`: ``num_workers`` actors placed by ``cluster.worker_resources``)
    and one sink (``cluster.sink_resources``). Rows are keyed by ``(item_id, model_version)``,
    so a backfill writes beside the rows of other versions.
    """

    model_version: str | None = Field(
        None, description="registry version to compute with; None = LATEST when the run starts"
    )
    sink_num_cpus: float = Field(0.25, ge=0)
    batch_size: int = Field(64, ge=1, description="events per worker call")
    idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Kafka ranges: fail when no record arrives for this long before the end",
    )


class AppConfig(FrozenModel):
    """The whole configuration; every section has working defaults."""

    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    ranker: RankerConfig = RankerConfig()
    encoder: EncoderConfig = EncoderConfig()
    extract: ExtractConfig = ExtractConfig()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    index: IndexConfig = IndexConfig()
    store: StoreConfig = StoreConfig()
    reader: ReaderConfig = ReaderConfig()
    kafka: KafkaConfig = KafkaConfig()
    stream: StreamConfig = StreamConfig()
    ray: RayConfig = RayConfig()
    eval: EvalConfig = EvalConfig()
    cluster: ClusterConfig = ClusterConfig()
    backfill: BackfillConfig = BackfillConfig()


# ------------------------------------------------------------------------- loading


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested dict from ``IDPROXY__SECTION__KEY=value`` variables (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if not path:
            continue
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another override")
        node[path[-1]] = yaml.safe_load(raw) if raw != "" else None
    return tree


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, recursively for nested mappings."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_THREADS_HINT = (
    "torch threads are set once per process: ranker.num_threads for a process that trains, "
    "torch_threads_per_worker of extract, stream and backfill for their actors"
)
# Keys that moved, so an old config fails with where the setting lives now.
MOVED_KEYS = {
    "extract.text_fields": "it is now 'encoder.text_fields'",
    "extract.num_actors": "it is now 'extract.num_workers'",
    "extract.num_cpus_per_actor": "it is now 'extract.worker_num_cpus'",
    "extract.num_gpus_per_actor": "it is now 'extract.worker_num_gpus'",
    "extract.torch_threads_per_actor": "it is now 'extract.torch_threads_per_worker'",
    "backfill.batches_in_flight_per_worker": "it is now 'backfill.worker_queue_depth'",
    "encoder.text.num_threads": _THREADS_HINT,
    "encoder.internvl.num_threads": _THREADS_HINT,
}


def _describe_validation_error(error: ValidationError, source: str) -> str:
    """One line for one problem, else a heading and a line per problem."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden" and key in MOVED_KEYS:
            problems.append(f"key '{key}' moved: {MOVED_KEYS[key]}")
        elif item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}': remove it or check its spelling")
        elif item["type"] == "missing":
            problems.append(f"missing key '{key}': add it")
        elif ENV_NAME_PROBLEM in item["msg"]:  # never echo the input: it may be a secret
            problems.append(f"'{key}': {item['msg'].removeprefix('Value error, ')}")
        elif is_env_name_setting(key):
            problems.append(f"'{key}': {ENV_NAME_PROBLEM}")
        else:
            message = item["msg"][:MAX_INPUT_REPR]
            problems.append(f"'{key}': {message} (got {bounded_repr(item.get('input'))})")
    if len(problems) == 1:
        return f"invalid configuration in {source}: {problems[0]}"
    return "\n".join([f"invalid configuration in {source}:", *(f"  - {p}" for p in problems)])


Model = TypeVar("Model", bound=BaseModel)


def with_updates(model: Model, **changes: Any) -> Model:
    """A copy of ``model`` with ``changes``, validated like a loaded config.

    Unlike ``model_copy(update=...)`` the result is checked: an unknown key or a bad value
    raises :class:`ConfigError` naming it. Values may be plain values or (sub-)models, e.g.
    ``with_updates(config, stream=with_updates(config.stream, model_dir=path))``.
    """
    merged = {name: getattr(model, name) for name in type(model).model_fields}
    merged.update(changes)
    try:
        return type(model).model_validate(merged)
    except ValidationError as error:
        raise ConfigError(
            _describe_validation_error(error, f"changes to {type(model).__name__}")
        ) from None


def config_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> AppConfig:
    """Validate a nested mapping into an :class:`AppConfig`, or raise :class:`ConfigError`."""
    try:
        return AppConfig.model_validate(dict(raw))
    except ValidationError as error:
        raise ConfigError(_describe_validation_error(error, source)) from None


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> AppConfig:
    """Load a YAML config (or the defaults when ``path`` is None) with env overrides.

    Raises :class:`ConfigError` naming the file and key for unreadable YAML, unknown
    keys and invalid values.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        file_path = Path(path)
        if not file_path.is_file():
            raise ConfigError(f"config file {source} does not exist: pass an existing YAML file")
        try:
            loaded = yaml.safe_load(file_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {source} is not valid YAML: {error}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {source} must hold a mapping of sections at the top")
        raw = loaded
    overrides = env_overrides(environ)
    if overrides:
        raw = deep_merge(raw, overrides)
        source = f"{source} (with IDPROXY__* environment overrides)"
    return config_from_dict(raw, source)


def resolve_secret(env_name: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Read a secret from the environment variable the config names; None when unset."""
    if env_name is None:
        return None
    if not isinstance(env_name, str) or not ENV_NAME_PATTERN.fullmatch(env_name):
        raise ConfigError(f"a setting ending in _env {ENV_NAME_PROBLEM}")
    environ = os.environ if environ is None else environ
    value = environ.get(env_name)
    if value is None:
        raise ConfigError(
            f"the config names environment variable {env_name} for a secret, but it is not set"
        )
    return value
