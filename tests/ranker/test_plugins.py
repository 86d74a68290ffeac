"""Rankers by import path: every wrong ``ranker.adapter`` is one line naming the setting; a
plugin factory's ranker trains a bundle whose ID space is that ranker's table."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from tests_helpers import planted_feature_table
from typer.testing import CliRunner

from idproxy_stream.cli import app
from idproxy_stream.config import RankerConfig
from idproxy_stream.ranker.plugins import (
    AdapterContext,
    RankerPluginError,
    build_adapter,
    load_factory,
)

REFERENCE = "idproxy_stream.ranker.reference_plugin:reference_ranker"

MY_RANKERS = """
import dataclasses
from idproxy_stream.config import RankerConfig
from idproxy_stream.ranker.din import DinRanker

def wrong_type(context):
    return {"id_embedding_dim": 16}

def wrong_table(context):
    small = dataclasses.replace(context.vocab, item_ids=context.vocab.item_ids[:5])
    return DinRanker(RankerConfig(), small)

def raises(context):
    raise KeyError("embedding_dim")

def untrained(context):
    return DinRanker(RankerConfig(id_dim=8), context.vocab)

NOT_CALLABLE = 3
"""


@pytest.fixture
def my_rankers(tmp_path, monkeypatch) -> str:
    """A real module of factories on ``sys.path``: its name."""
    (tmp_path / "my_rankers.py").write_text(textwrap.dedent(MY_RANKERS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rankers"


@pytest.fixture
def context(encoded_parts) -> AdapterContext:
    vocab, parts = encoded_parts
    return AdapterContext(
        settings={}, checkpoint=None, vocab=vocab, train=parts["warm_train"], valid=parts["rare"]
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "my_rankers.untrained",
            "ranker.adapter = 'my_rankers.untrained': expected 'package.module:factory'",
        ),
        (
            "no_such_package_xyz:factory",
            "cannot import module 'no_such_package_xyz' "
            "(ModuleNotFoundError: No module named 'no_such_package_xyz'); install it or fix",
        ),
        ("my_rankers:missing", "module 'my_rankers' has no 'missing'"),
        ("my_rankers:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a callable factory"),
    ],
)
def test_a_wrong_import_path_is_one_line_naming_ranker_adapter(my_rankers, path, message):
    with pytest.raises(RankerPluginError) as raised:
        load_factory(path)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"ranker.adapter = {path!r}: ")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("wrong_type", "the factory returned a dict, not a RankerAdapter (id_embedding_dim, "),
        ("wrong_table", "id_embedding_table() has shape (6, 16), expected (301, 16)"),
        ("raises", "the factory raised KeyError: 'embedding_dim'"),
    ],
)
def test_a_factory_breaking_the_protocol_is_refused_in_one_line(
    my_rankers, context, factory, message
):
    config = RankerConfig(adapter=f"my_rankers:{factory}")
    with pytest.raises(RankerPluginError) as raised:
        build_adapter(config, context)
    assert "\n" not in str(raised.value)
    assert message in str(raised.value), str(raised.value)


def test_a_conforming_factory_gets_the_settings_and_its_ranker_scores_batches(my_rankers, context):
    adapter = build_adapter(RankerConfig(adapter="my_rankers:untrained"), context)
    assert adapter.id_embedding_table().shape == (context.vocab.num_item_rows, 8)
    batch = context.train.batch(slice(0, 4))
    assert adapter.forward(batch).shape == (4,)


def test_idproxy_train_with_a_wrong_adapter_fails_at_start_up_naming_the_setting(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("ranker:\n  adapter: 'no_such_package_xyz:factory'\n")
    result = CliRunner().invoke(
        app, ["train", "--config", str(config), "--model-dir", str(tmp_path / "m")]
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: ranker.adapter = 'no_such_package_xyz:factory': cannot import module"
    )
    assert not (tmp_path / "m").exists()  # refused before any work


def test_a_bundle_trains_through_a_plugin_ranker_and_stage2_reloads_it(tmp_path, my_rankers):
    """The reference ranker as a plugin: trained once into its checkpoint, the bundle's ID space
    is exactly its table, the Stage 2 job builds it again from the checkpoint, and a bundle
    trained through one adapter refuses another."""
    from training.test_bundle import CONFIG

    from idproxy_stream.artifacts import BundleLayout
    from idproxy_stream.config import with_updates
    from idproxy_stream.data.synthetic import generate_synthetic
    from idproxy_stream.index.id_space import IdSpace
    from idproxy_stream.ranker.training import load_ranker
    from idproxy_stream.training.bundle import load_training_data, train_model_bundle
    from idproxy_stream.training.jobs import TrainingJobError, stage2_inputs

    checkpoint = tmp_path / "my-ranker"
    ranker = with_updates(
        CONFIG.ranker,
        adapter=REFERENCE,
        adapter_settings={"epochs": 1, "batch_size": 256, "learning_rate": 1e-2},
        checkpoint=checkpoint,
    )
    config = with_updates(CONFIG, ranker=ranker)
    features = planted_feature_table(generate_synthetic(CONFIG.data.synthetic))
    model_dir = tmp_path / "bundle"
    report = train_model_bundle(config, model_dir, "v1", features=features)
    assert report.metrics["stage2_best_valid_auc"] > 0.5
    layout = BundleLayout(model_dir)
    assert (layout.ranker / "adapter.json").is_file()
    assert not (layout.ranker / "ranker.json").exists()  # the weights stay in the checkpoint
    trained = load_ranker(checkpoint)
    space = IdSpace.load(layout.id_space)
    rows = torch.from_numpy(trained.vocab.item_rows(space.item_ids))
    np.testing.assert_array_equal(
        space.embeddings, trained.id_embedding_table()[rows].detach().numpy()
    )

    # what the Stage 2 job does: build the bundle's ranker again, from the checkpoint
    data = load_training_data(config)
    again = stage2_inputs(data, layout, features, config).ranker
    assert torch.equal(again.id_embedding_table(), trained.id_embedding_table())
    assert not any(p.requires_grad for p in again.parameters())
    # a checkpoint holding another ranker than the one Stage 1 aligned to is refused
    moved = with_updates(
        ranker,
        checkpoint=tmp_path / "another-ranker",
        adapter_settings={**ranker.adapter_settings, "learning_rate": 3e-3},
    )
    with pytest.raises(TrainingJobError, match=r"but Stage 1 in .* aligned to"):
        stage2_inputs(data, layout, features, with_updates(config, ranker=moved))

    other = with_updates(config, ranker=with_updates(ranker, adapter="my_rankers:untrained"))
    with pytest.raises(RankerPluginError, match=r"was trained through .idproxy_stream\.ranker"):
        train_model_bundle(other, model_dir, "v3", features=features)
    unset = with_updates(config, ranker=with_updates(ranker, adapter=None))
    with pytest.raises(RankerPluginError, match=r"ranker\.adapter is unset, but the bundle"):
        train_model_bundle(unset, model_dir, "v3", features=features)
