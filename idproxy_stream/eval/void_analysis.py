"""Does the neighbour check earn its place? Cold AUC of void-flagged items and of each policy.

For one seed, the IDProxy proxies of the cold items go through the same
:class:`~idproxy_stream.index.void.NeighbourChecker` the stream uses (Faiss index over the
mature ID space, void threshold calibrated on the proxies of held-out mature items, as
``training/bundle.py`` builds it). Reported:

- ``void_rate``: share of cold items whose proxy is void;
- ``auc_void_items`` / ``auc_other_items``: cold-test AUC over the samples of void items only
  and of the other items only (with every proxy as computed);
- ``policy_cold_auc``: cold-test AUC of the whole cold set when void proxies are handled by each
  policy: ``flag`` (written as is), ``knn_average`` (replaced by the neighbours' average) and
  ``dead_letter`` (no row, so a reader serves its fallback: the mean mature ID).
"""

from __future__ import annotations

import numpy as np
import torch

from idproxy_stream.config import IndexConfig
from idproxy_stream.index.id_space import IdSpace
from idproxy_stream.index.void import NeighbourChecker
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.ranker.training import evaluate_ranker, table_override

POLICIES = ("flag", "knn_average", "dead_letter")


def void_analysis(
    ranker: RankerAdapter,
    id_table: torch.Tensor,
    item_ids_by_row: np.ndarray,
    mature_rows: torch.Tensor,
    mature_counts: np.ndarray,
    cold_rows: torch.Tensor,
    cold_proxies: torch.Tensor,
    calibration_rows: torch.Tensor,
    calibration_proxies: torch.Tensor,
    cold_test: RankerInputs,
    config: IndexConfig,
    tau: int,
) -> dict:
    """The neighbour check's effect on cold AUC (see the module docstring).

    Args:
        ranker: the frozen ranker.
        id_table: (N_rows, D) its ID table.
        item_ids_by_row: (N_rows,) raw item id of each row (row 0 unused).
        mature_rows / mature_counts: (M,) rows of the items in the ID space and their counts.
        cold_rows / cold_proxies: (C,) rows and (C, D) proxies of the cold items.
        calibration_rows / calibration_proxies: held-out mature items and their proxies.
        cold_test: the cold test samples.
        config: index settings (k, keep_fraction, kind).
        tau: maturity threshold of the index.
    """
    id_space = IdSpace.from_arrays(
        item_ids_by_row[mature_rows.numpy()],
        id_table[mature_rows].detach().numpy().astype(np.float32),
        mature_counts,
    )
    use_holdout = len(calibration_rows) >= 20
    checker = NeighbourChecker.build(
        id_space,
        config.model_copy(update={"k": min(config.k, max(1, len(mature_rows) - 1))}),
        tau,
        calibration_queries=calibration_proxies.numpy() if use_holdout else None,
        calibration_item_ids=item_ids_by_row[calibration_rows.numpy()] if use_holdout else None,
    )
    proxies = cold_proxies.detach().numpy().astype(np.float32)
    checks = checker.check(proxies)
    void = np.array([check.void for check in checks], dtype=bool)
    result: dict = {
        "void_rate": float(void.mean()) if len(void) else 0.0,
        "threshold": checker.threshold,
    }
    table = id_table.detach().clone()
    table[cold_rows] = cold_proxies.detach()
    is_void_sample = torch.isin(cold_test.item, cold_rows[torch.from_numpy(void)])
    for name, mask in (("auc_void_items", is_void_sample), ("auc_other_items", ~is_void_sample)):
        part = cold_test.subset(mask)
        enough = len(part) > 0 and len(torch.unique(part.label)) > 1
        result[name] = (
            evaluate_ranker(ranker, part, table_override(table))["auc"] if enough else None
        )
    mean_id = id_table[mature_rows].detach().mean(0)
    result["policy_cold_auc"] = {}
    for policy in POLICIES:
        handled = cold_proxies.detach().clone()
        if void.any():
            if policy == "knn_average":
                decisions = NeighbourChecker(
                    checker.index, id_space, checker.threshold, checker.k, "knn_average"
                ).apply_policy(proxies, checks)
                handled = torch.from_numpy(np.stack([decision.proxy for decision in decisions]))
            elif policy == "dead_letter":
                handled[torch.from_numpy(void)] = mean_id
        policy_table = id_table.detach().clone()
        policy_table[cold_rows] = handled
        result["policy_cold_auc"][policy] = evaluate_ranker(
            ranker, cold_test, table_override(policy_table)
        )["auc"]
    return result
