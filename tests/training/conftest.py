"""A cold-start setting on the tiny synthetic split for the through-the-ranker baselines.

The content features are the planted ones (a noisy linear map of the generator's true item
factors), so content really predicts what the ranker learned: content methods must beat a
random initial embedding by a wide margin there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch

from idproxy_stream.eval.protocol import cold_table
from idproxy_stream.ranker.din import DinRanker
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.ranker.training import evaluate_ranker, table_override
from idproxy_stream.training import baselines
from idproxy_stream.training.cold_start_context import ThroughRankerContext, interaction_counts
from idproxy_stream.training.item_features import RowFeatures

TAU = 20


@dataclass(frozen=True)
class ColdStartSetting:
    """The tiny split's ranker, features, mature rows and cold evaluation sets."""

    ranker: DinRanker
    features: RowFeatures
    mature_rows: torch.Tensor
    samples: RankerInputs
    cold_rows: torch.Tensor
    stages: tuple[RankerInputs, ...]
    cold_test: RankerInputs

    def context(
        self, seed: int = 0, validation: dict[str, RankerInputs] | None = None
    ) -> ThroughRankerContext:
        return ThroughRankerContext(
            ranker=self.ranker,
            features=self.features,
            mature_rows=self.mature_rows,
            samples=self.samples,
            item_counts=interaction_counts(self.samples, len(self.features.has_features)),
            seed=seed,
            validation=validation,
        )

    def validation(self, seed: int = 0, misleading: bool = False) -> dict[str, RankerInputs]:
        """``{"mature": samples of a seeded fifth of the mature items}``; ``misleading`` flips
        their labels, so the worst ranking scores best."""
        context = self.context(seed)
        _, held = context.split_mature(0.2)
        samples = context.samples_of(held)
        if misleading:
            samples = dataclasses.replace(samples, label=1.0 - samples.label)
        return {"mature": samples}

    def with_flipped_labels_of(self, context: ThroughRankerContext) -> ThroughRankerContext:
        """``context`` whose training samples of the validation items have flipped labels: a
        fit that never reads those samples is unchanged by it."""
        flip = torch.isin(context.samples.item, context.validation_rows())
        label = torch.where(flip, 1.0 - context.samples.label, context.samples.label)
        return dataclasses.replace(
            context, samples=dataclasses.replace(context.samples, label=label)
        )

    def mature_norm(self) -> float:
        """Mean L2 norm of the mature items' ID embeddings."""
        return float(self.id_table()[self.mature_rows].norm(dim=1).mean())

    def id_table(self) -> torch.Tensor:
        return self.ranker.id_embedding_table().detach().clone()

    def cold_auc(self, proxies: torch.Tensor) -> float:
        """Cold-test AUC with the cold items' rows replaced by ``proxies`` (C, D)."""
        table = cold_table(self.id_table(), self.cold_rows, proxies)
        return evaluate_ranker(self.ranker, self.cold_test, table_override(table))["auc"]

    def random_auc(self, seed: int = 0) -> float:
        """Cold-test AUC of the protocol's ``random`` baseline."""
        targets = self.id_table()[self.mature_rows]
        return self.cold_auc(baselines.random_proxies(targets, len(self.cold_rows), seed))


@pytest.fixture(scope="session")
def cold_start_setting(tiny_ranker, encoded_parts, planted_features, tiny_split):
    vocab, parts = encoded_parts
    features = RowFeatures.from_table(
        planted_features, vocab.item_rows(planted_features.item_ids), vocab.num_item_rows
    )
    train_counts = interaction_counts(parts["warm_train"], vocab.num_item_rows)
    mature = torch.nonzero((train_counts >= TAU) & features.has_features).squeeze(1)
    return ColdStartSetting(
        ranker=tiny_ranker,
        features=features,
        mature_rows=mature,
        samples=RankerInputs.concat([parts["warm_train"], parts["warm_valid"]]),
        cold_rows=torch.from_numpy(vocab.item_rows(tiny_split.cold_items)),
        stages=tuple(parts[f"cold_{stage}"] for stage in "abc"),
        cold_test=parts["cold_test"],
    )


@pytest.fixture
def assert_ranker_unchanged(cold_start_setting):
    """A check that the ranker is bit-identical to its state when the test started."""
    ranker = cold_start_setting.ranker
    before = {name: tensor.clone() for name, tensor in ranker.state_dict().items()}

    def check() -> None:
        for name, tensor in ranker.state_dict().items():
            assert torch.equal(tensor, before[name]), f"ranker weight {name} changed"
        assert all(parameter.requires_grad for parameter in ranker.parameters())
        assert not ranker.training

    return check
