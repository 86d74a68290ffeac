"""The cold-start evaluation protocol: every method on the same split and the same frozen ranker.

For one seed:

1. Train the reference ranker on the warm items' training samples (early-stopped on warm valid).
2. Every method produces a stand-in ID embedding for each cold item from content features
   (baselines, IDProxy Stage 1 only, IDProxy Stage 1 + 2).
3. Cold start: the cold items' ID rows are replaced by the method's proxies, in the candidate
   and behaviour positions alike (through the ranker's override hook), and the cold test set is
   scored (AUC, log loss).
4. Warm-up (CVAR / Meta-Embedding): starting from the proxies, only the cold items' embeddings
   are updated on warm-up set a, then b, then c (one pass each, the ranker frozen); the cold
   test set is scored after each.
5. Warm-item AUC with the method's table in place (it must not change: warm samples never read
   a cold item's row).
6. Oracles: the ranker retrained from scratch with the cold items' warm-up rows a, a+b, a+b+c
   included, scored on the same cold test set.

Nothing here looks at the cold test set to choose anything: every choice is made on warm or
held-out warm items.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from idproxy_stream.config import AppConfig, RankerConfig
from idproxy_stream.data.schema import RecDataset
from idproxy_stream.data.split import ColdStartSplit
from idproxy_stream.encoders.features import FeatureTable
from idproxy_stream.eval.void_analysis import void_analysis
from idproxy_stream.eval.warmup import ColdEmbeddings, warmup_curve
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import (
    FeatureVocab,
    ItemSideFeatures,
    RankerInputs,
    encode_samples,
)
from idproxy_stream.ranker.plugins import AdapterContext, build_adapter, freeze
from idproxy_stream.ranker.training import (
    RankerTrainReport,
    evaluate_ranker,
    table_override,
    train_ranker,
)
from idproxy_stream.training import baselines
from idproxy_stream.training.cold_start_context import ThroughRankerContext, interaction_counts
from idproxy_stream.training.cvar import fit_cvar
from idproxy_stream.training.item_features import RowFeatures
from idproxy_stream.training.meta_embedding import meta_embedding_proxies
from idproxy_stream.training.mwuf import fit_mwuf
from idproxy_stream.training.pipeline import (
    IdProxyTraining,
    idproxy_validation_sets,
    train_idproxy,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]

METHODS = (
    "random",
    "mean_id",
    "ridge",
    "regression_mlp",
    "dropoutnet",
    "knn",
    "meta_embedding",
    "mwuf",
    "cvar",
    "idproxy_stage1",
    "idproxy",
)
ORACLES = ("oracle_a", "oracle_ab", "oracle_abc")
WARMUP_STAGES = ("a", "b", "c")


@dataclass(frozen=True)
class ColdStartData:
    """A dataset, its split and features, encoded once for every seed and method."""

    dataset: RecDataset
    split: ColdStartSplit
    vocab: FeatureVocab
    inputs: dict[str, RankerInputs]
    features: RowFeatures
    warm_rows: torch.Tensor
    cold_rows: torch.Tensor
    trained_rankers: dict = field(default_factory=dict)

    @classmethod
    def prepare(
        cls, dataset: RecDataset, split: ColdStartSplit, feature_table: FeatureTable
    ) -> ColdStartData:
        vocab = FeatureVocab.from_dataset(dataset)
        side = ItemSideFeatures.from_dataset(dataset, vocab)
        inputs = {
            name: encode_samples(frame, dataset, vocab, side) for name, frame in split.parts.items()
        }
        features = RowFeatures.from_table(
            feature_table, vocab.item_rows(feature_table.item_ids), vocab.num_item_rows
        )
        return cls(
            dataset=dataset,
            split=split,
            vocab=vocab,
            inputs=inputs,
            features=features,
            warm_rows=torch.from_numpy(vocab.item_rows(split.warm_items)),
            cold_rows=torch.from_numpy(vocab.item_rows(split.cold_items)),
        )

    def ranker(self, config: RankerConfig, seed: int) -> tuple[RankerAdapter, RankerTrainReport]:
        """The ranker for ``seed``, built once, then reused: the reference ranker trained on the
        warm split, or the plugin ``config.adapter`` names (its factory gets the seed)."""
        seeded = config.model_copy(update={"seed": seed})
        key = seeded.model_dump_json()
        if key not in self.trained_rankers and config.adapter is not None:
            context = AdapterContext(
                settings=dict(config.adapter_settings),
                checkpoint=config.checkpoint,
                vocab=self.vocab,
                train=self.inputs["warm_train"],
                valid=self.inputs["warm_valid"],
                seed=seed,
                items=self.dataset.items,
            )
            self.trained_rankers[key] = (build_adapter(seeded, context), RankerTrainReport())
        elif key not in self.trained_rankers:
            self.trained_rankers[key] = train_ranker(
                self.inputs["warm_train"], self.inputs["warm_valid"], seeded, self.vocab
            )
        return self.trained_rankers[key]

    def mature_rows(self, tau: int) -> torch.Tensor:
        """Rows of items with at least ``tau`` interactions in the ranker's training data."""
        counts = torch.bincount(self.inputs["warm_train"].item, minlength=self.vocab.num_item_rows)
        counts[0] = 0
        return torch.nonzero(counts >= tau).squeeze(1)


def cold_table(
    id_table: torch.Tensor, cold_rows: torch.Tensor, proxies: torch.Tensor
) -> torch.Tensor:
    """(N_rows, D) copy of the ID table with the cold rows replaced by (C, D) proxies."""
    table = id_table.detach().clone()
    table[cold_rows] = proxies.detach()
    return table


@dataclass
class MethodProxies:
    """Every method's (C, D) cold-item proxies for one seed, and IDProxy's training.

    ``cold_embeddings`` holds, for the methods with their own warm-up (MWUF, CVAR), a factory
    of the :class:`~idproxy_stream.eval.warmup.ColdEmbeddings` the warm-up loop drives; the
    other methods warm up a free embedding initialised from their proxies.
    """

    proxies: dict[str, torch.Tensor]
    idproxy: IdProxyTraining | None = None
    cold_embeddings: dict[str, Callable[[], ColdEmbeddings]] = field(default_factory=dict)

    @property
    def idproxy_metrics(self) -> dict[str, float]:
        return dict(self.idproxy.metrics) if self.idproxy is not None else {}


def method_proxies(
    data: ColdStartData,
    config: AppConfig,
    ranker: RankerAdapter,
    methods: Sequence[str],
    seed: int,
    timings: dict[str, float],
    mature_fraction: float = 1.0,
    progress: Progress | None = None,
) -> MethodProxies:
    """Proxies (C, D) for the cold items from each method, plus IDProxy's training.

    ``mature_fraction`` < 1 lets only a random share of the mature items (seeded) supervise the
    mappings, for the learning curve; Stage 2 then trains on those items' samples only.
    """
    say = progress or (lambda message: logger.debug(message))
    id_table = ranker.id_embedding_table().detach()
    mature = data.mature_rows(config.stage1.tau)
    mature = mature[data.features.has_features[mature]]
    if mature_fraction < 1.0:
        generator = torch.Generator().manual_seed(seed)
        keep = max(4, round(len(mature) * mature_fraction))
        mature = mature[torch.randperm(len(mature), generator=generator)[:keep]].sort().values
    inputs = data.features.global_embedding
    train_inputs, targets = inputs[mature], id_table[mature]
    query = inputs[data.cold_rows]
    count = len(data.cold_rows)
    ranker_samples = RankerInputs.concat([data.inputs["warm_train"], data.inputs["warm_valid"]])
    context = ThroughRankerContext(
        ranker=ranker,
        features=data.features,
        mature_rows=mature,
        samples=ranker_samples,
        item_counts=interaction_counts(ranker_samples, data.vocab.num_item_rows),
        seed=seed,
        validation=idproxy_validation_sets(
            data.features,
            mature,
            ranker_samples,
            data.inputs["rare"],
            config.stage1.model_copy(update={"seed": seed}),
            config.stage2.model_copy(update={"seed": seed}),
        ),
    )
    builders: dict[str, Callable[[], torch.Tensor]] = {
        "random": lambda: baselines.random_proxies(targets, count, seed),
        "mean_id": lambda: baselines.mean_id_proxies(targets, count),
        "ridge": lambda: baselines.ridge_proxies(train_inputs, targets, query),
        "regression_mlp": lambda: baselines.regression_mlp_proxies(
            train_inputs, targets, query, seed
        ),
        "dropoutnet": lambda: baselines.dropoutnet_proxies(train_inputs, targets, query, seed),
        "knn": lambda: baselines.knn_proxies(train_inputs, targets, query),
        "meta_embedding": lambda: meta_embedding_proxies(context, data.cold_rows),
    }
    result = MethodProxies(proxies={})
    for method in methods:
        started = time.perf_counter()
        if method in builders:
            result.proxies[method] = builders[method]()
        elif method == "mwuf":
            mwuf = fit_mwuf(context)
            result.proxies[method] = mwuf.cold_start_embeddings(data.cold_rows)
            result.cold_embeddings[method] = lambda m=mwuf: m.cold_embeddings(data.cold_rows)
        elif method == "cvar":
            cvar = fit_cvar(context)
            result.proxies[method] = cvar.proxies(data.cold_rows)
            result.cold_embeddings[method] = lambda m=cvar: m.cold_embeddings(data.cold_rows)
        elif method in ("idproxy_stage1", "idproxy") and result.idproxy is None:
            training = train_idproxy(
                ranker,
                data.features,
                mature,
                ranker_samples,
                data.inputs["rare"],
                config.stage1.model_copy(update={"seed": seed}),
                config.stage2.model_copy(update={"seed": seed}),
            )
            cold_global = data.features.global_embedding[data.cold_rows]
            cold_clusters = data.features.cluster_states[data.cold_rows]
            result.proxies["idproxy_stage1"] = training.stage1_model.predict(
                cold_global, cold_clusters
            )
            result.proxies["idproxy"] = training.model.predict(cold_global, cold_clusters)
            result.idproxy = training
            timings["idproxy_stage1"] = training.metrics["stage1_seconds"]
            timings["idproxy_stage2"] = training.metrics["stage2_seconds"]
            say(f"  seed {seed}: IDProxy trained in {time.perf_counter() - started:.1f} s")
            continue
        elif method not in ("idproxy_stage1", "idproxy"):
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        else:
            continue
        timings[method] = time.perf_counter() - started
        say(f"  seed {seed}: {method} fitted in {timings[method]:.1f} s")
    result.proxies = {m: result.proxies[m] for m in methods}
    return result


def idproxy_void_analysis(
    data: ColdStartData,
    config: AppConfig,
    ranker: RankerAdapter,
    training: IdProxyTraining,
    cold_proxies: torch.Tensor,
) -> dict:
    """The neighbour check on IDProxy's cold proxies (see ``eval/void_analysis.py``)."""
    id_table = ranker.id_embedding_table().detach()
    warm_rows = data.warm_rows
    counts = torch.bincount(data.inputs["warm_train"].item, minlength=data.vocab.num_item_rows)
    holdout = training.holdout_rows if training.holdout_rows is not None else warm_rows[:0]
    holdout_proxies = training.model.predict(
        data.features.global_embedding[holdout], data.features.cluster_states[holdout]
    )
    item_ids_by_row = np.concatenate([[-1], np.asarray(data.vocab.item_ids, dtype=np.int64)])
    return void_analysis(
        ranker,
        id_table,
        item_ids_by_row,
        warm_rows,
        counts[warm_rows].numpy(),
        data.cold_rows,
        cold_proxies,
        holdout,
        holdout_proxies,
        data.inputs["cold_test"],
        config.index,
        config.stage1.tau,
    )


def run_seed(
    data: ColdStartData,
    config: AppConfig,
    seed: int,
    methods: Sequence[str] = METHODS,
    oracles: Sequence[str] = ORACLES,
    progress: Progress | None = None,
) -> dict:
    """Every method's metrics for one seed (see the module docstring)."""
    say = progress or (lambda message: logger.debug(message))
    timings: dict[str, float] = {}
    ranker_config = config.ranker.model_copy(update={"seed": seed})
    started = time.perf_counter()
    ranker, ranker_report = data.ranker(config.ranker, seed)
    timings["ranker"] = time.perf_counter() - started
    say(f"  seed {seed}: ranker ready in {timings['ranker']:.1f} s")
    id_table = ranker.id_embedding_table().detach().clone()
    freeze(ranker)
    warm_test = data.inputs["warm_test"]
    cold_test = data.inputs["cold_test"]
    stages = [data.inputs[f"cold_{stage}"] for stage in WARMUP_STAGES]
    results: dict[str, dict[str, float]] = {}
    fitted = method_proxies(data, config, ranker, methods, seed, timings, progress=say)
    for method, cold_proxies in fitted.proxies.items():
        started = time.perf_counter()
        warming = fitted.cold_embeddings.get(method)
        curve = warmup_curve(
            ranker,
            id_table,
            data.cold_rows,
            warming() if warming is not None else cold_proxies,
            stages,
            cold_test,
            config.eval.warmup_learning_rate,
            config.eval.warmup_epochs,
            seed=seed,
        )
        warm = evaluate_ranker(
            ranker, warm_test, table_override(cold_table(id_table, data.cold_rows, cold_proxies))
        )
        results[method] = _flatten(curve, warm)
        timings[f"warmup_{method}"] = time.perf_counter() - started
    void = None
    if fitted.idproxy is not None and "idproxy" in fitted.proxies:
        void = idproxy_void_analysis(
            data, config, ranker, fitted.idproxy, fitted.proxies["idproxy"]
        )
    if oracles and config.ranker.adapter is not None:
        # retraining someone else's ranker is not ours to do: oracles need the reference one
        logger.warning("oracles %s skipped: ranker.adapter is a plugin ranker", list(oracles))
        oracles = ()
    for oracle in oracles:
        started = time.perf_counter()
        included = WARMUP_STAGES[: len(oracle.removeprefix("oracle_"))]
        train = RankerInputs.concat(
            [data.inputs["warm_train"]] + [data.inputs[f"cold_{s}"] for s in included]
        )
        retrained, _ = train_ranker(train, data.inputs["warm_valid"], ranker_config, data.vocab)
        cold = evaluate_ranker(retrained, cold_test)
        warm = evaluate_ranker(retrained, warm_test)
        results[oracle] = {
            "cold_auc": cold["auc"],
            "cold_logloss": cold["logloss"],
            "warm_auc": warm["auc"],
            "warm_logloss": warm["logloss"],
        }
        timings[oracle] = time.perf_counter() - started
        say(f"  seed {seed}: {oracle} retrained in {timings[oracle]:.1f} s")
    return {
        "seed": seed,
        "methods": results,
        "ranker": {
            "warm_test": evaluate_ranker(ranker, warm_test),
            "best_epoch": ranker_report.best_epoch,
        },
        "idproxy_training": fitted.idproxy_metrics,
        "void_analysis": void,
        "timings": timings,
    }


def _flatten(curve: list[dict[str, float]], warm: dict[str, float]) -> dict[str, float]:
    flat = {"cold_auc": curve[0]["auc"], "cold_logloss": curve[0]["logloss"]}
    for stage, metrics in zip(WARMUP_STAGES, curve[1:], strict=True):
        flat[f"warmup_{stage}_auc"] = metrics["auc"]
        flat[f"warmup_{stage}_logloss"] = metrics["logloss"]
    flat["warm_auc"] = warm["auc"]
    flat["warm_logloss"] = warm["logloss"]
    return flat


def summarise(seed_results: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """Per method and metric: mean, std and per-seed values across seeds."""
    summary: dict[str, dict[str, dict]] = {}
    for result in seed_results:
        for method, metrics in result["methods"].items():
            for metric, value in metrics.items():
                entry = summary.setdefault(method, {}).setdefault(metric, {"values": []})
                entry["values"].append(float(value))
    for metrics in summary.values():
        for entry in metrics.values():
            values = np.asarray(entry["values"])
            entry["mean"] = float(values.mean())
            entry["std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return summary
