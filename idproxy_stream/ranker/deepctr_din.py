"""DeepCTR-Torch's DIN behind the RankerAdapter protocol (optional extra ``[deepctr]``).

``ranker.adapter: "idproxy_stream.ranker.deepctr_din:deepctr_din"``. The factory loads a DIN
saved in ``ranker.checkpoint`` (a folder: ``din.safetensors`` + ``din.json``), or trains a new
one on the warm split and saves it there. ``ranker.adapter_settings`` are
:class:`DeepCtrDinSettings` fields.

How our batch becomes DIN's input ``X`` (one float tensor, a column block per feature, the order
of ``feature_columns``):

- ``user`` (B, 1), one column per user feature ``user_<name>`` (B, 1), ``item_id`` (B, 1): the
  rows of :class:`~idproxy_stream.ranker.inputs.FeatureVocab`, mapped through ``row_to_index``
  (identity for a DIN trained here; a model trained elsewhere passes its own mapping);
- ``hist_item_id`` (B, H) and ``seq_length`` (B, 1): DeepCTR masks history positions
  ``>= seq_length``, so our left-padded histories (oldest first, 0 = padding) are packed to the
  front first, keeping their order.

Overrides: the candidate and history embeddings share DIN's ``item_id`` embedding (the
candidate is read twice: as attention query and as DNN input). During an overridden call that
embedding module is swapped for a lookup into ``[candidate (B, D); history (B*H, D)]`` and the
item columns of ``X`` hold positions in it, so every place DIN reads an item embedding reads the
override. The logit is DIN's output before its sigmoid (the prediction layer is run as
``task="regression"`` for the call).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
from deepctr_torch.models import DIN
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from idproxy_stream.ranker.inputs import FeatureVocab, RankerBatch
from idproxy_stream.ranker.library_checkpoint import LibraryDin, OverrideLookup
from idproxy_stream.ranker.plugins import AdapterContext, RankerPluginError

FORMAT = "idproxy-deepctr-din/1"


class DeepCtrDinSettings(BaseModel):
    """``ranker.adapter_settings`` of this adapter: DIN's shape and its training here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    embedding_dim: int = Field(16, ge=2, description="every sparse feature's embedding width")
    history_length: int = Field(20, ge=1, description="H: must equal split.history_length")
    dnn_hidden_units: tuple[int, ...] = (64, 32)
    att_hidden_size: tuple[int, ...] = (32, 16)
    dnn_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    patience: int = Field(2, ge=1, description="early stopping on warm-valid AUC")


def feature_columns(vocab: FeatureVocab, settings: DeepCtrDinSettings) -> list:
    """DIN's feature columns for our vocabulary (see the module docstring for the order)."""
    dim = settings.embedding_dim
    columns = [SparseFeat("user", vocab.num_user_rows, embedding_dim=dim)]
    columns += [
        SparseFeat(f"user_{name}", len(values) + 1, embedding_dim=dim)
        for name, values in zip(vocab.user_feature_columns, vocab.user_feature_values, strict=True)
    ]
    columns.append(SparseFeat("item_id", vocab.num_item_rows, embedding_dim=dim))
    history = SparseFeat("hist_item_id", vocab.num_item_rows, dim, embedding_name="item_id")
    columns.append(
        VarLenSparseFeat(history, maxlen=settings.history_length, length_name="seq_length")
    )
    return columns


def pack_history(history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, H) left-padded rows -> (order (B, H), lengths (B,)): ``history.gather(1, order)``
    holds the valid entries first, in their original order."""
    order = torch.argsort((history == 0).to(torch.int8), dim=1, stable=True)
    return order, (history > 0).sum(dim=1)


class DeepCtrDinAdapter(nn.Module):
    """A DeepCTR-Torch :class:`DIN` as a :class:`~idproxy_stream.ranker.adapter.RankerAdapter`.

    Args:
        model: the DIN, built with :func:`feature_columns` of ``vocab`` (or the same names).
        vocab: the rows our batches carry.
        row_to_index: (N_rows,) int64 DIN index of each of our item rows; None = identity.
    """

    def __init__(
        self,
        model: DIN,
        vocab: FeatureVocab,
        settings: DeepCtrDinSettings,
        row_to_index: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.vocab = vocab
        self.settings = settings
        self.id_embedding_dim = settings.embedding_dim
        if row_to_index is None:
            row_to_index = torch.arange(vocab.num_item_rows)
        self.register_buffer("row_to_index", row_to_index.long(), persistent=False)

    def item_id_embedding(self, item_rows: torch.Tensor) -> torch.Tensor:
        """(...) item rows -> (..., D)."""
        return self.model.embedding_dict["item_id"](self.row_to_index[item_rows])

    def id_embedding_table(self) -> torch.Tensor:
        """(N_rows, D) DIN's item embeddings in our row order (row 0 = padding)."""
        return self.model.embedding_dict["item_id"].weight[self.row_to_index]

    def _inputs(self, batch: RankerBatch, candidate: torch.Tensor, history: torch.Tensor):
        """DIN's X (B, 1 + F_u + 1 + H + 1) from item columns ``candidate`` (B,) and
        ``history`` (B, H) already in DIN's index space (or override positions)."""
        parts = [batch.user.unsqueeze(1), batch.user_features, candidate.unsqueeze(1), history]
        lengths = (batch.history > 0).sum(dim=1, keepdim=True)
        return torch.cat([*parts, lengths], dim=1).float()

    @contextlib.contextmanager
    def _logits_and_lookup(self, lookup: nn.Module | None) -> Iterator[None]:
        """For one call: DIN's prediction layer without its sigmoid, and ``lookup`` (when
        given) in place of the item embedding."""
        embeddings, task = self.model.embedding_dict, self.model.out.task
        original = embeddings["item_id"]
        self.model.out.task = "regression"
        if lookup is not None:
            embeddings["item_id"] = lookup
        try:
            yield
        finally:
            self.model.out.task = task
            embeddings["item_id"] = original

    def forward(
        self,
        batch: RankerBatch,
        candidate_item_embedding: torch.Tensor | None = None,
        history_item_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Click logits (B,); overrides (B, D) and (B, H, D) as RankerAdapter.forward."""
        order, _ = pack_history(batch.history)
        packed_rows = batch.history.gather(1, order)
        if candidate_item_embedding is None and history_item_embedding is None:
            x = self._inputs(batch, self.row_to_index[batch.item], self.row_to_index[packed_rows])
            with self._logits_and_lookup(None):
                return self.model(x).squeeze(-1)
        size, length = batch.history.shape
        candidate = (
            self.item_id_embedding(batch.item)
            if candidate_item_embedding is None
            else candidate_item_embedding
        )
        history = (
            self.item_id_embedding(batch.history)
            if history_item_embedding is None
            else history_item_embedding
        )
        history = history.gather(1, order.unsqueeze(-1).expand(-1, -1, history.shape[-1]))
        table = torch.cat([candidate, history.reshape(size * length, -1)], dim=0)
        candidate_positions = torch.arange(size)
        history_positions = size + torch.arange(size * length).reshape(size, length)
        x = self._inputs(batch, candidate_positions, history_positions)
        with self._logits_and_lookup(OverrideLookup(table)):
            return self.model(x).squeeze(-1)


def build_din(vocab: FeatureVocab, settings: DeepCtrDinSettings, seed: int) -> DIN:
    """An untrained DIN for ``vocab`` (DeepCTR seeds torch's global generator with ``seed``)."""
    return DIN(
        feature_columns(vocab, settings),
        ["item_id"],
        dnn_hidden_units=settings.dnn_hidden_units,
        att_hidden_size=settings.att_hidden_size,
        dnn_dropout=settings.dnn_dropout,
        init_std=0.05,
        seed=seed,
        task="binary",
        device="cpu",
    )


def _check_history_length(settings: DeepCtrDinSettings, context: AdapterContext) -> None:
    history_length = context.train.history.shape[1]
    if settings.history_length != history_length:
        raise RankerPluginError(
            f"ranker.adapter_settings.history_length = {settings.history_length}, but the "
            f"batches hold {history_length} history items: set it to split.history_length"
        )


LIBRARY_DIN = LibraryDin(
    name="DeepCTR DIN",
    fmt=FORMAT,
    settings_model=DeepCtrDinSettings,
    build=build_din,
    adapter=lambda model, vocab, settings: DeepCtrDinAdapter(model, vocab, settings),
    check=_check_history_length,
)
save_din = LIBRARY_DIN.save
load_din = LIBRARY_DIN.load


def deepctr_din(context: AdapterContext) -> DeepCtrDinAdapter:
    """The factory: load ``context.checkpoint`` or train a DIN (and save it there)."""
    return LIBRARY_DIN.load_or_train(context)
