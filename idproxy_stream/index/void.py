"""The neighbour check: does a proxy land where mature IDs live, or in a void?

Following Sun et al. (ICML 2022, "Out-of-distribution detection with deep nearest
neighbors"): features are L2-normalised, the score of a query is its Euclidean distance to the
k-th nearest in-distribution point (here: mature ID embeddings), and the threshold is the
``keep_fraction`` quantile of that score over in-distribution calibration queries, so that
``keep_fraction`` of them pass. A proxy above the threshold is *void*.

Calibration (:func:`calibrate_void_threshold`) takes any in-distribution queries. With
``query_item_ids`` it is leave-one-out: each query's own item is dropped from its neighbours,
so queries may be items of the index itself. :meth:`NeighbourChecker.build` calibrates by
default on a sample of the mature ID embeddings, leave-one-out; training code that has proxies
of held-out mature items can pass those instead (closer to what the stream will see), also with
their item ids so that their own IDs are excluded, as a new item's ID would be absent.

Void policies (``IndexConfig.void_policy``):
- ``flag``: write the proxy as is with ``status="void_flagged"``.
- ``knn_average``: replace it by the similarity-weighted average of its k neighbours' raw ID
  embeddings (weights = cosine clipped at 1e-6, normalised to sum 1), rescaled to the same
  weighted average of the neighbours' raw norms, since averaging directions shrinks the norm
  and the ranker was trained on ID vectors of that magnitude; ``status="knn_fallback"``.
- ``dead_letter``: no record; the stream turns the decision into a dead letter.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from idproxy_stream.config import IndexConfig
from idproxy_stream.digests import bounded_repr, finite_number
from idproxy_stream.events import NeighbourCheck
from idproxy_stream.index.faiss_index import (
    MANIFEST_FILE,
    MISSING_NEIGHBOUR,
    IdIndex,
    IndexBuildError,
)
from idproxy_stream.index.id_space import IdSpace, IdSpaceMismatchError

logger = logging.getLogger(__name__)

DecisionStatus = Literal["ok", "void_flagged", "knn_fallback", "dead_letter"]
VOID_POLICIES = ("flag", "knn_average", "dead_letter")
MIN_WEIGHT = 1e-6


def void_scores(kth_similarities: np.ndarray) -> np.ndarray:
    """Euclidean distance between unit vectors from their cosine: sqrt(2 - 2 cos), in [0, 2]."""
    return np.sqrt(np.clip(2.0 - 2.0 * kth_similarities.astype(np.float64), 0.0, 4.0))


def leave_one_out_kth(
    item_ids: np.ndarray, similarities: np.ndarray, query_item_ids: np.ndarray, k: int
) -> np.ndarray:
    """(M,) similarity to the k-th neighbour once each query's own item is removed.

    item_ids / similarities: (M, k + 1) search results, best first. Where the query's item is
    among them it is dropped; otherwise the (k + 1)-th result is.
    """
    is_self = item_ids == np.asarray(query_item_ids, dtype=np.int64)[:, None]
    has_self = is_self.any(axis=1)
    self_position = np.where(has_self, is_self.argmax(axis=1), k)
    return np.where(self_position < k, similarities[:, k], similarities[:, k - 1])


def calibrate_void_threshold(
    index: IdIndex,
    queries: np.ndarray,
    k: int,
    keep_fraction: float,
    query_item_ids: np.ndarray | None = None,
) -> float:
    """Void-score threshold under which ``keep_fraction`` of in-distribution queries fall.

    queries: (M, D) raw vectors of in-distribution items (mature ID embeddings, or proxies of
        held-out mature items).
    query_item_ids: (M,) their item ids; when given, each query's own item is excluded from
        its neighbours (leave-one-out), which is required when the queries are in the index.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    if len(queries) == 0:
        raise ValueError("calibration needs at least one in-distribution query")
    if query_item_ids is None:
        _, similarities, _ = index.search(queries, k)
        kth = similarities[:, k - 1]
    else:
        if len(query_item_ids) != len(queries):
            raise ValueError(
                f"{len(query_item_ids)} query_item_ids for {len(queries)} queries: "
                "pass one id per query"
            )
        item_ids, similarities, _ = index.search(queries, k + 1)
        kth = leave_one_out_kth(item_ids, similarities, query_item_ids, k)
    return float(np.quantile(void_scores(kth), keep_fraction, method="higher"))


def require_k_within(k: int, num_members: int) -> None:
    """Refuse a neighbour count the mature ID space cannot fill."""
    if k > num_members:
        raise IndexBuildError(
            f"index.k={k} but the mature ID space has only {num_members} items: lower index.k "
            "or the maturity threshold (stage1.tau)"
        )


@dataclass(frozen=True)
class VoidDecision:
    """What to do with one proxy after its neighbour check.

    proxy: (D,) float32 vector to write (the input, or the kNN average); None for dead letters.
    status: "ok", "void_flagged", "knn_fallback", or "dead_letter" (write nothing).
    reason: why the proxy was judged void, for logs and dead letters; None when it is not.
    """

    proxy: np.ndarray | None
    status: DecisionStatus
    check: NeighbourCheck
    reason: str | None = None

    @property
    def is_dead_letter(self) -> bool:
        return self.status == "dead_letter"

    def record_fields(self) -> dict[str, Any]:
        """The ``ProxyRecord`` fields this decision fills (proxy, neighbours, void, status)."""
        if self.proxy is None:
            raise ValueError("a dead-letter decision has no proxy to write; send a dead letter")
        return {
            "proxy": self.proxy,
            "neighbours": self.check.neighbour_ids,
            "neighbour_similarities": self.check.similarities,
            "void": self.check.void,
            "void_score": self.check.void_score,
            "status": self.status,
        }


class NeighbourChecker:
    """kNN void check of proxies against the mature ID space, plus the configured policy.

    Example::

        checker = NeighbourChecker.build(id_space, IndexConfig(), tau=20)
        decisions = checker.decide(proxies)          # (B, D) -> B decisions, one faiss search
    """

    def __init__(
        self,
        index: IdIndex,
        id_space: IdSpace,
        threshold: float,
        k: int,
        policy: str,
        calibration: dict[str, Any] | None = None,
    ) -> None:
        if index.fingerprint != id_space.fingerprint:
            raise IdSpaceMismatchError(
                "the neighbour index",
                expected=id_space.fingerprint,
                found=index.fingerprint,
                rebuild="build the index from this IdSpace",
            )
        require_k_within(k, index.num_members)
        if policy not in VOID_POLICIES:
            raise ValueError(f"unknown void policy {policy!r}: use one of {VOID_POLICIES}")
        self.index = index
        self.id_space = id_space
        self.threshold = float(threshold)
        self.k = k
        self.policy = policy
        self.calibration = calibration or {}

    @classmethod
    def build(
        cls,
        id_space: IdSpace,
        config: IndexConfig,
        tau: int,
        calibration_queries: np.ndarray | None = None,
        calibration_item_ids: np.ndarray | None = None,
    ) -> NeighbourChecker:
        """Index the mature IDs (>= ``tau`` interactions) and calibrate the void threshold.

        Without ``calibration_queries``, up to ``config.calibration_size`` mature ID embeddings
        are drawn (seeded) and calibrated leave-one-out.
        """
        index = IdIndex.build(id_space, config, tau)
        require_k_within(config.k, index.num_members)
        if calibration_queries is None:
            rng = np.random.default_rng(config.seed)
            size = min(config.calibration_size, index.num_members)
            rows = np.sort(rng.choice(index.member_rows, size, replace=False))
            calibration_queries = id_space.embeddings[rows]
            calibration_item_ids = id_space.item_ids[rows]
            method = "leave-one-out over mature ID embeddings"
        else:
            method = "given queries" + (
                ", leave-one-out" if calibration_item_ids is not None else ""
            )
        threshold = calibrate_void_threshold(
            index, calibration_queries, config.k, config.keep_fraction, calibration_item_ids
        )
        calibration = {
            "method": method,
            "num_queries": len(calibration_queries),
            "keep_fraction": config.keep_fraction,
            "tau": tau,
        }
        logger.info("void threshold %.4f at k=%d (%s)", threshold, config.k, calibration)
        return cls(index, id_space, threshold, config.k, config.void_policy, calibration)

    def check_arrays(
        self, proxies: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(B, D) -> neighbour ids, sims, rows (B, k) each, void scores (B,), void flags (B,)."""
        item_ids, similarities, rows = self.index.search(proxies, self.k)
        scores = void_scores(similarities[:, self.k - 1])
        return item_ids, similarities, rows, scores, scores > self.threshold

    def check(self, proxies: np.ndarray) -> list[NeighbourCheck]:
        """One :class:`NeighbourCheck` per row of ``proxies`` (B, D), from one faiss search."""
        item_ids, similarities, _, scores, void = self.check_arrays(proxies)
        return [
            NeighbourCheck(item_ids[i], similarities[i], float(scores[i]), bool(void[i]))
            for i in range(len(scores))
        ]

    def knn_average(self, rows: np.ndarray, similarities: np.ndarray) -> np.ndarray:
        """(B, D) similarity-weighted average of neighbours' raw ID embeddings at their norm.

        rows / similarities: (B, k) neighbour rows in the ID table and their cosines.
        """
        present = rows != MISSING_NEIGHBOUR
        weights = np.where(present, np.clip(similarities, MIN_WEIGHT, None), 0.0)
        weights = weights / weights.sum(axis=1, keepdims=True)
        neighbours = self.id_space.embeddings[np.where(present, rows, 0)].astype(np.float64)
        mean = np.einsum("bk,bkd->bd", weights, neighbours)
        target_norm = np.einsum("bk,bk->b", weights, np.linalg.norm(neighbours, axis=2))
        mean_norm = np.linalg.norm(mean, axis=1)
        scale = np.divide(target_norm, mean_norm, out=np.zeros_like(mean_norm), where=mean_norm > 0)
        return (mean * scale[:, None]).astype(np.float32)

    def decide(self, proxies: np.ndarray) -> list[VoidDecision]:
        """Check ``proxies`` (B, D) and apply the policy: one decision per row."""
        return self.apply_policy(proxies, self.check(proxies))

    def apply_policy(self, proxies: np.ndarray, checks: list[NeighbourCheck]) -> list[VoidDecision]:
        """Turn checks into decisions under ``self.policy`` (see the module docstring)."""
        proxies = np.asarray(proxies, dtype=np.float32)
        if len(checks) != len(proxies):
            raise ValueError(f"{len(checks)} checks for {len(proxies)} proxies")
        void_positions = [i for i, check in enumerate(checks) if check.void]
        replacements: dict[int, np.ndarray] = {}
        if self.policy == "knn_average" and void_positions:
            neighbour_ids = np.stack([checks[i].neighbour_ids for i in void_positions])
            rows = self.id_space.rows_of(neighbour_ids).reshape(neighbour_ids.shape)
            rows = np.where(neighbour_ids == MISSING_NEIGHBOUR, MISSING_NEIGHBOUR, rows)
            sims = np.stack([checks[i].similarities for i in void_positions])
            averaged = self.knn_average(rows, sims)
            replacements = {position: averaged[j] for j, position in enumerate(void_positions)}
        decisions = []
        for i, check in enumerate(checks):
            if not check.void:
                decisions.append(VoidDecision(proxies[i].copy(), "ok", check))
                continue
            reason = (
                f"proxy is outside the mature ID space: distance {check.void_score:.4f} to its "
                f"{self.k}-th nearest mature ID exceeds the threshold {self.threshold:.4f}"
            )
            if self.policy == "flag":
                decisions.append(VoidDecision(proxies[i].copy(), "void_flagged", check, reason))
            elif self.policy == "knn_average":
                decisions.append(VoidDecision(replacements[i], "knn_fallback", check, reason))
            else:
                decisions.append(VoidDecision(None, "dead_letter", check, reason))
        return decisions

    def save(self, directory: str | Path) -> Path:
        """Write the index and the calibrated threshold (``index.json`` holds both)."""
        extra = {"void": {"threshold": self.threshold, "k": self.k, **self.calibration}}
        return self.index.save(directory, extra=extra)

    @classmethod
    def load(
        cls, directory: str | Path, id_space: IdSpace, config: IndexConfig
    ) -> NeighbourChecker:
        """Load a saved checker for ``id_space``; refuses an index built for another ID space.

        The policy comes from ``config`` (a serving choice); ``k`` and the threshold come from
        the saved calibration, and ``config.k`` must agree with them.
        """
        index = IdIndex.load(directory, expected_fingerprint=id_space.fingerprint)
        void = IdIndex.read_manifest(directory).get("void")
        if not void:
            raise IndexBuildError(
                f"{directory} holds an index without a void calibration: build it with "
                "NeighbourChecker.build(...).save(directory)"
            )
        manifest = Path(directory) / MANIFEST_FILE
        if not isinstance(void, dict):
            raise IndexBuildError(f"{manifest}: 'void' must be an object: rebuild the checker")
        threshold, k = void.get("threshold"), void.get("k")
        # A NaN threshold would turn the void check off (every comparison is false).
        finite_number(threshold, f"{manifest}: void.threshold", IndexBuildError)
        if not 0.0 <= threshold <= 2.0:
            raise IndexBuildError(
                f"{manifest}: void.threshold must lie in [0, 2] (a distance between unit "
                f"vectors), got {threshold}: rebuild the checker"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise IndexBuildError(
                f"{manifest}: void.k must be a positive integer, got {bounded_repr(k)}"
            )
        if k != config.k:
            raise IndexBuildError(
                f"the void threshold in {directory} was calibrated for k={k}, but "
                f"index.k={config.k}: set index.k={k} or rebuild the checker"
            )
        calibration = {key: value for key, value in void.items() if key not in ("threshold", "k")}
        return cls(index, id_space, float(threshold), k, config.void_policy, calibration)
