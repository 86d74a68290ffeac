"""The ColdEmbeddings warm-up loop: the plain case is the original warm-up, number for number."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from idproxy_stream.eval.warmup import ColdEmbeddings, FreeColdEmbeddings, warmup_curve
from idproxy_stream.ranker.adapter import RankerAdapter
from idproxy_stream.ranker.inputs import RankerInputs
from idproxy_stream.ranker.training import evaluate_ranker, table_override
from idproxy_stream.training import baselines


def reference_warmup_curve(
    ranker: RankerAdapter,
    id_table: torch.Tensor,
    cold_rows: torch.Tensor,
    initial: torch.Tensor,
    stages: Sequence[RankerInputs],
    test: RankerInputs,
    learning_rate: float,
    epochs: int,
    batch_size: int = 128,
    seed: int = 0,
) -> list[dict[str, float]]:
    """The protocol's warm-up loop as it was before ColdEmbeddings, kept as the reference.

    Only the cold items' embeddings (C, D), initialised from ``initial``, are updated; the ranker
    is frozen. Stages are applied in order, each continuing from the previous one.
    """
    cold = torch.nn.Parameter(initial.detach().clone())
    base = id_table.detach().clone()
    optimizer = torch.optim.Adam([cold], lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)

    def table() -> torch.Tensor:
        return base.index_put((cold_rows,), cold)

    curve = [evaluate_ranker(ranker, test, table_override(table().detach()))]
    for stage in stages:
        for _ in range(epochs):
            for batch in stage.batches(batch_size, shuffle=True, generator=generator):
                current = table()
                logits = ranker.forward(batch, current[batch.item], current[batch.history])
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.label)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        curve.append(evaluate_ranker(ranker, test, table_override(table().detach())))
    return curve


@pytest.fixture(scope="module")
def warmup_inputs(tiny_ranker, encoded_parts, tiny_split):
    vocab, parts = encoded_parts
    cold_rows = torch.from_numpy(vocab.item_rows(tiny_split.cold_items))
    id_table = tiny_ranker.id_embedding_table().detach().clone()
    initial = baselines.random_proxies(id_table[1:], len(cold_rows), seed=5)
    stages = [parts[f"cold_{stage}"] for stage in "abc"]
    return id_table, cold_rows, initial, stages, parts["cold_test"]


def run(ranker, warmup_inputs, cold_embeddings, function=warmup_curve, seed=3):
    id_table, cold_rows, _, stages, test = warmup_inputs
    return function(
        ranker,
        id_table,
        cold_rows,
        cold_embeddings,
        stages,
        test,
        1e-2,
        1,
        batch_size=64,
        seed=seed,
    )


def test_plain_cold_embeddings_reproduce_the_original_warmup_exactly(tiny_ranker, warmup_inputs):
    initial = warmup_inputs[2]
    expected = run(tiny_ranker, warmup_inputs, initial, function=reference_warmup_curve)
    assert run(tiny_ranker, warmup_inputs, FreeColdEmbeddings(initial)) == expected
    assert run(tiny_ranker, warmup_inputs, initial) == expected
    assert len(expected) == 4 and expected[-1] != expected[0]
    # the seed drives the batch order, as in the protocol
    assert run(tiny_ranker, warmup_inputs, initial, seed=4) != expected


class RecordingColdEmbeddings(FreeColdEmbeddings):
    """Scores a fixed embedding while training a free one, and records the hook calls."""

    def __init__(self, initial: torch.Tensor) -> None:
        super().__init__(initial)
        self.scored = initial.detach().clone()
        self.calls: list[tuple[str, int, bool]] = []

    def embeddings(self) -> torch.Tensor:
        return self.scored

    def begin_stage(self, samples) -> None:
        self.calls.append(("begin", len(samples), torch.equal(self.cold.detach(), self.scored)))

    def end_stage(self, samples) -> None:
        self.calls.append(("end", len(samples), torch.equal(self.cold.detach(), self.scored)))
        self.scored = self.cold.detach().clone()


def test_hooks_bracket_each_stage_and_scoring_reads_embeddings(tiny_ranker, warmup_inputs):
    _, _, initial, stages, _ = warmup_inputs
    recorder = RecordingColdEmbeddings(initial)
    assert isinstance(recorder, ColdEmbeddings)
    curve = run(tiny_ranker, warmup_inputs, recorder)
    sizes = [len(stage) for stage in stages]
    assert recorder.calls == [
        ("begin", sizes[0], True),
        ("end", sizes[0], False),
        ("begin", sizes[1], True),
        ("end", sizes[1], False),
        ("begin", sizes[2], True),
        ("end", sizes[2], False),
    ]
    # end_stage copies the trained parameter to what is scored: the plain curve again
    assert curve == run(tiny_ranker, warmup_inputs, initial)


def test_warm_up_leaves_the_ranker_and_its_flags_unchanged(tiny_ranker, warmup_inputs):
    before = {name: tensor.clone() for name, tensor in tiny_ranker.state_dict().items()}
    run(tiny_ranker, warmup_inputs, warmup_inputs[2])
    for name, tensor in tiny_ranker.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(parameter.requires_grad for parameter in tiny_ranker.parameters())
