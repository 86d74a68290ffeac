"""FuxiCTR's DIN behind the RankerAdapter protocol (optional extra ``[fuxictr]``).

``ranker.adapter: "idproxy_stream.ranker.fuxictr_din:fuxictr_din"``. The model is the DIN that
the ``fuxictr`` 2.3.10 wheel ships (``model_zoo.LongCTR.DIN``); the factory loads one saved in
``ranker.checkpoint`` (``din.safetensors`` + ``din.json``) or trains one on the warm split and
saves it there. ``ranker.adapter_settings`` are :class:`FuxiCtrDinSettings` fields.

How our batch becomes FuxiCTR's input ``(batch_dict, item_dict, mask)``:

- ``batch_dict``: ``user`` (B,) and ``user_<name>`` (B,) per user feature, rows of our vocabulary;
- ``item_dict``: ``item_id`` (B * (H + 1),): per sample its H history rows, then the candidate
  (FuxiCTR's DIN reads the target as the last item of each row);
- ``mask``: (B, H), 1 where ``batch.history > 0``; FuxiCTR multiplies the attention weights by
  it, so padding contributes nothing whatever its embedding.

Overrides: for one call, FuxiCTR's ``item_id`` embedding layer is swapped for a lookup into the
override table ``[history (B, H, D), candidate (B, 1, D)]`` flattened in the same order, so the
target and the sequence both read the overrides. Logits: the DIN is built for regression
(identity output), or, for a binary model trained elsewhere, its final sigmoid is skipped.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import OrderedDict
from collections.abc import Iterator

import torch
from fuxictr.features import FeatureMap
from model_zoo.LongCTR.DIN.DIN import DIN
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from idproxy_stream.ranker.inputs import FeatureVocab, RankerBatch
from idproxy_stream.ranker.library_checkpoint import LibraryDin, OverrideLookup
from idproxy_stream.ranker.plugins import AdapterContext

FORMAT = "idproxy-fuxictr-din/1"


class FuxiCtrDinSettings(BaseModel):
    """``ranker.adapter_settings`` of this adapter: DIN's shape and its training here."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    embedding_dim: int = Field(16, ge=2, description="every feature's embedding width")
    dnn_hidden_units: tuple[int, ...] = (64, 32)
    attention_hidden_units: tuple[int, ...] = (32,)
    attention_hidden_activations: str = "Dice"
    net_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    patience: int = Field(2, ge=1, description="early stopping on warm-valid AUC")


def feature_map(vocab: FeatureVocab, embedding_dim: int) -> FeatureMap:
    """FuxiCTR's feature map of our vocabulary: user, user features, item (source ``item``)."""
    features: OrderedDict = OrderedDict()
    features["user"] = {"type": "categorical", "source": "user", "vocab_size": vocab.num_user_rows}
    for name, values in zip(vocab.user_feature_columns, vocab.user_feature_values, strict=True):
        features[f"user_{name}"] = {
            "type": "categorical",
            "source": "user",
            "vocab_size": len(values) + 1,
        }
    features["item_id"] = {
        "type": "categorical",
        "source": "item",
        "vocab_size": vocab.num_item_rows,
        "padding_idx": 0,
    }
    mapping = FeatureMap("idproxy", data_dir=tempfile.gettempdir())  # no pretrained files read
    mapping.features = features
    mapping.labels = ["label"]
    mapping.default_emb_dim = embedding_dim
    mapping.num_fields = mapping.get_num_fields()
    mapping.set_column_index()
    return mapping


def build_din(vocab: FeatureVocab, settings: FuxiCtrDinSettings, seed: int) -> DIN:
    """An untrained DIN with an identity output (its forward returns logits)."""
    torch.manual_seed(seed)
    return DIN(
        feature_map(vocab, settings.embedding_dim),
        model_id="DIN",
        gpu=-1,
        task="regression",
        dnn_hidden_units=list(settings.dnn_hidden_units),
        attention_hidden_units=list(settings.attention_hidden_units),
        attention_hidden_activations=settings.attention_hidden_activations,
        embedding_dim=settings.embedding_dim,
        net_dropout=settings.net_dropout,
        learning_rate=settings.learning_rate,
        optimizer="adam",
        loss="binary_crossentropy",
        metrics=["AUC"],
        model_root=tempfile.gettempdir(),  # FuxiCTR's own checkpoint path; never written here
        verbose=0,
    )


class FuxiCtrDinAdapter(nn.Module):
    """A FuxiCTR ``DIN`` as a :class:`~idproxy_stream.ranker.adapter.RankerAdapter`."""

    def __init__(self, model: DIN, vocab: FeatureVocab, settings: FuxiCtrDinSettings) -> None:
        super().__init__()
        self.model = model
        self.vocab = vocab
        self.settings = settings
        self.id_embedding_dim = settings.embedding_dim

    @property
    def _item_layers(self) -> nn.ModuleDict:
        return self.model.embedding_layer.embedding_layer.embedding_layers

    def item_id_embedding(self, item_rows: torch.Tensor) -> torch.Tensor:
        """(...) item rows -> (..., D)."""
        return self._item_layers["item_id"](item_rows)

    def id_embedding_table(self) -> torch.Tensor:
        """(N_rows, D) the item embedding table (row 0 = padding)."""
        return self._item_layers["item_id"].weight

    @contextlib.contextmanager
    def _logits_and_lookup(self, lookup: nn.Module | None) -> Iterator[None]:
        """For one call: no final sigmoid (binary models trained elsewhere), and ``lookup``
        (when given) in place of the item embedding layer."""
        layers, mlp = self._item_layers, self.model.dnn.mlp
        original, last = layers["item_id"], mlp[-1]
        if isinstance(last, nn.Sigmoid):
            mlp[-1] = nn.Identity()
        if lookup is not None:
            layers["item_id"] = lookup
        try:
            yield
        finally:
            layers["item_id"] = original
            mlp[-1] = last

    def forward(
        self,
        batch: RankerBatch,
        candidate_item_embedding: torch.Tensor | None = None,
        history_item_embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Click logits (B,); overrides (B, D) and (B, H, D) as RankerAdapter.forward."""
        size, length = batch.history.shape
        users = {"user": batch.user}
        for column, name in enumerate(self.vocab.user_feature_columns):
            users[f"user_{name}"] = batch.user_features[:, column]
        mask = (batch.history > 0).float()
        lookup = None
        if candidate_item_embedding is None and history_item_embedding is None:
            items = torch.cat([batch.history, batch.item.unsqueeze(1)], dim=1).reshape(-1)
        else:
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
            table = torch.cat([history, candidate.unsqueeze(1)], dim=1).reshape(
                size * (length + 1), -1
            )
            lookup = OverrideLookup(table)
            items = torch.arange(size * (length + 1))
        with self._logits_and_lookup(lookup):
            output = self.model((users, {"item_id": items}, mask))["y_pred"]
        return output.squeeze(-1)


LIBRARY_DIN = LibraryDin(
    name="FuxiCTR DIN",
    fmt=FORMAT,
    settings_model=FuxiCtrDinSettings,
    build=build_din,
    adapter=lambda model, vocab, settings: FuxiCtrDinAdapter(model, vocab, settings),
)
save_din = LIBRARY_DIN.save
load_din = LIBRARY_DIN.load


def fuxictr_din(context: AdapterContext) -> FuxiCtrDinAdapter:
    """The factory: load ``context.checkpoint`` or train a DIN (and save it there)."""
    return LIBRARY_DIN.load_or_train(context)
