"""Cold-start baselines: each maps content features to a stand-in for a new item's ID embedding.

Every baseline is fit on mature items (content features -> the frozen ranker's ID embeddings) and
returns proxies (N, D_id) for the requested rows. They share the ranker, the split and the
features with IDProxy, so the table compares mappings and nothing else.

- ``random``: draws from N(0, sd) with the per-dimension sd of mature IDs (a fresh ID row).
- ``mean_id``: the mean mature ID embedding for every new item.
- ``ridge``: closed-form ridge regression content -> ID, the penalty chosen by k-fold
  cross-validation over mature items.
- ``regression_mlp``: CB2CF-style MLP trained with MSE on mature IDs, early-stopped on held-out
  mature items.
- ``dropoutnet``: DropoutNet-style (Volkovs et al., 2017) network reading ``[ID, content]`` with
  the ID input dropped out during training, so it learns to reconstruct an ID from content alone;
  cold items get a zero ID input.
- ``knn``: similarity-weighted average of the ID embeddings of the k nearest mature items in
  content space.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

RIDGE_PENALTIES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def random_proxies(id_targets: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """(count, D) Gaussian draws with the per-dimension sd of ``id_targets`` (M, D)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, id_targets.shape[1], generator=generator) * id_targets.std(0)


def mean_id_proxies(id_targets: torch.Tensor, count: int) -> torch.Tensor:
    """(count, D) copies of the mean of ``id_targets`` (M, D)."""
    return id_targets.mean(0, keepdim=True).expand(count, -1).clone()


def _ridge_solve(inputs: torch.Tensor, targets: torch.Tensor, penalty: float) -> torch.Tensor:
    """Coefficients (F + 1, D) of ridge regression with an unpenalised intercept."""
    design = torch.cat([inputs.double(), torch.ones(len(inputs), 1, dtype=torch.float64)], 1)
    regulariser = penalty * torch.eye(design.shape[1], dtype=torch.float64)
    regulariser[-1, -1] = 0.0
    return torch.linalg.solve(design.T @ design + regulariser, design.T @ targets.double())


def _ridge_apply(coefficients: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    design = torch.cat([inputs.double(), torch.ones(len(inputs), 1, dtype=torch.float64)], 1)
    return (design @ coefficients).float()


def choose_ridge_penalty(
    inputs: torch.Tensor, targets: torch.Tensor, folds: int = 5, seed: int = 0
) -> float:
    """The penalty from :data:`RIDGE_PENALTIES` with the lowest k-fold validation MSE."""
    generator = torch.Generator().manual_seed(seed)
    fold_of = torch.randperm(len(inputs), generator=generator) % folds
    best_penalty, best_error = RIDGE_PENALTIES[0], float("inf")
    for penalty in RIDGE_PENALTIES:
        error = 0.0
        for fold in range(folds):
            held = fold_of == fold
            coefficients = _ridge_solve(inputs[~held], targets[~held], penalty)
            error += float(((_ridge_apply(coefficients, inputs[held]) - targets[held]) ** 2).sum())
        if error < best_error:
            best_penalty, best_error = penalty, error
    return best_penalty


def ridge_coefficients(
    inputs: torch.Tensor, targets: torch.Tensor, penalty: float | None = None
) -> tuple[torch.Tensor, float]:
    """Ridge coefficients (F + 1, D) for (N, F) -> (N, D), the last row the intercept.

    The penalty is chosen by k-fold cross-validation when not given; returns it too.
    """
    if penalty is None:
        penalty = choose_ridge_penalty(inputs, targets)
    return _ridge_solve(inputs, targets, penalty), penalty


def ridge_proxies(
    train_inputs: torch.Tensor,
    train_targets: torch.Tensor,
    query_inputs: torch.Tensor,
    penalty: float | None = None,
) -> torch.Tensor:
    """Ridge regression (N_train, F) -> (N_train, D), applied to (N_query, F)."""
    if penalty is None:
        penalty = choose_ridge_penalty(train_inputs, train_targets)
    return _ridge_apply(_ridge_solve(train_inputs, train_targets, penalty), query_inputs)


def knn_proxies(
    train_inputs: torch.Tensor,
    train_targets: torch.Tensor,
    query_inputs: torch.Tensor,
    k: int = 10,
    temperature: float = 0.05,
) -> torch.Tensor:
    """Softmax(cosine / temperature)-weighted average of the k nearest mature items' IDs."""
    similarity = F.normalize(query_inputs, dim=-1) @ F.normalize(train_inputs, dim=-1).T
    top = similarity.topk(min(k, len(train_inputs)), dim=1)
    weights = torch.softmax(top.values / temperature, dim=1)
    return (weights.unsqueeze(-1) * train_targets[top.indices]).sum(1)


def _fit_mse(
    network: nn.Module,
    make_inputs,
    targets: torch.Tensor,
    train_rows: torch.Tensor,
    valid_rows: torch.Tensor,
    epochs: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
    batch_size: int = 128,
) -> nn.Module:
    """Minimise MSE with early stopping on ``valid_rows``; returns the best network."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=weight_decay)
    best_state, best_error, since_best = copy.deepcopy(network.state_dict()), float("inf"), 0
    for _ in range(epochs):
        network.train()
        order = train_rows[torch.randperm(len(train_rows), generator=generator)]
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            loss = F.mse_loss(network(make_inputs(rows, True)), targets[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        network.eval()
        with torch.no_grad():
            error = float(F.mse_loss(network(make_inputs(valid_rows, False)), targets[valid_rows]))
        if error < best_error:
            best_state, best_error, since_best = copy.deepcopy(network.state_dict()), error, 0
        else:
            since_best += 1
            if since_best >= 10:
                break
    network.load_state_dict(best_state)
    network.eval()
    return network


def _mlp(input_dim: int, output_dim: int, hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(input_dim, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, output_dim),
    )


def _train_valid_rows(count: int, seed: int, fraction: float = 0.1) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(count, generator=generator)
    held = max(1, round(count * fraction))
    return order[held:], order[:held]


def regression_mlp_proxies(
    train_inputs: torch.Tensor,
    train_targets: torch.Tensor,
    query_inputs: torch.Tensor,
    seed: int = 0,
    hidden: int = 256,
    dropout: float = 0.2,
    epochs: int = 300,
) -> torch.Tensor:
    """CB2CF-style MLP content -> ID trained with MSE."""
    torch.manual_seed(seed)
    network = _mlp(train_inputs.shape[1], train_targets.shape[1], hidden, dropout)
    train_rows, valid_rows = _train_valid_rows(len(train_inputs), seed)
    network = _fit_mse(
        network,
        lambda rows, _: train_inputs[rows],
        train_targets,
        train_rows,
        valid_rows,
        epochs,
        1e-3,
        1e-4,
        seed,
    )
    with torch.no_grad():
        return network(query_inputs)


def dropoutnet_proxies(
    train_inputs: torch.Tensor,
    train_targets: torch.Tensor,
    query_inputs: torch.Tensor,
    seed: int = 0,
    hidden: int = 256,
    id_dropout: float = 0.5,
    epochs: int = 300,
) -> torch.Tensor:
    """DropoutNet-style: f([ID * keep, content]) -> ID, ID dropped with ``id_dropout``."""
    torch.manual_seed(seed)
    id_dim = train_targets.shape[1]
    network = _mlp(train_inputs.shape[1] + id_dim, id_dim, hidden, 0.1)
    generator = torch.Generator().manual_seed(seed + 1)

    def make_inputs(rows: torch.Tensor, training: bool) -> torch.Tensor:
        ids = train_targets[rows]
        if training:
            keep = (torch.rand(len(rows), 1, generator=generator) >= id_dropout).float()
        else:
            keep = torch.zeros(len(rows), 1)  # validate as at cold start: no ID
        return torch.cat([ids * keep, train_inputs[rows]], dim=1)

    train_rows, valid_rows = _train_valid_rows(len(train_inputs), seed)
    network = _fit_mse(
        network, make_inputs, train_targets, train_rows, valid_rows, epochs, 1e-3, 1e-4, seed
    )
    with torch.no_grad():
        return network(torch.cat([torch.zeros(len(query_inputs), id_dim), query_inputs], dim=1))
