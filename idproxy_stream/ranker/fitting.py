"""Training a plugin ranker through its adapter: the loop the shipped adapters share.

The adapter's ``forward`` gives logits, so any adapter whose weights live in ``adapter``'s
parameters trains the same way: BCE on logits, Adam, early stopping on validation AUC, the best
epoch's weights kept. For factories that train a small model when their checkpoint is missing
(tests, demos); a production ranker is trained by its own pipeline.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.ranker.metrics import roc_auc

logger = logging.getLogger(__name__)


def fit_adapter(
    adapter: nn.Module,
    train: RankerInputs,
    valid: RankerInputs,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    seed: int,
) -> float:
    """Train ``adapter`` in place (left in eval mode with its best weights); best valid AUC."""
    optimizer = torch.optim.Adam(adapter.parameters(), lr=learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(seed)
    best_auc, best_epoch, best_state = -1.0, 0, copy.deepcopy(adapter.state_dict())
    for epoch in range(epochs):
        adapter.train()
        for batch in train.batches(batch_size, shuffle=True, generator=generator):
            loss = loss_fn(adapter(batch), batch.label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        adapter.eval()
        with torch.no_grad():
            logits = torch.cat([adapter(batch) for batch in valid.batches(4096)])
        auc = roc_auc(valid.label.numpy(), logits.numpy())
        logger.info(
            "%s epoch %d/%d: valid AUC %.4f", type(adapter).__name__, epoch + 1, epochs, auc
        )
        if auc > best_auc:
            best_auc, best_epoch = auc, epoch + 1
            best_state = copy.deepcopy(adapter.state_dict())
        elif epoch + 1 - best_epoch >= patience:
            break
    adapter.load_state_dict(best_state)
    adapter.eval()
    return best_auc
