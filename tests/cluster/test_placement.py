"""Placement from config: ``cluster/placement.py``, the backfill actors' options, and the
config section's checks."""

from __future__ import annotations

import pytest

from idproxy_stream.backfill.runner import sink_spec, worker_spec
from idproxy_stream.cluster.placement import placement
from idproxy_stream.config import ClusterConfig, ConfigError, config_from_dict


def test_placement_asks_for_the_roles_custom_resources_only():
    cluster = ClusterConfig(
        source_resources={"cpu_node": 0.01}, worker_resources={"encoder_l4": 0.5}
    )
    assert placement(cluster, "source") == {"resources": {"cpu_node": 0.01}}
    assert placement(cluster, "worker") == {"resources": {"encoder_l4": 0.5}}
    assert placement(cluster, "sink") == {}  # nothing asked: Ray may place it anywhere
    placement(cluster, "source")["resources"]["cpu_node"] = 9  # a copy, the config is frozen
    assert cluster.source_resources == {"cpu_node": 0.01}


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"GPU": 1}, "num_cpus / num_gpus"),
        ({"CPU": 1}, "custom resources"),
        ({"cpu_node": 0}, "must be > 0"),
    ],
)
def test_builtin_or_empty_resources_are_refused(resources, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"cluster": {"sink_resources": resources}})


def test_backfill_actors_take_their_sizes_and_placement_from_config():
    config = config_from_dict(
        {
            "backfill": {
                "worker_num_gpus": 1,
                "worker_num_cpus": 2,
                "sink_num_cpus": 0.5,
                "torch_threads_per_worker": 3,
            },
            "cluster": {
                "worker_resources": {"encoder_a10g": 0.01},
                "sink_resources": {"cpu_node": 0.01},
            },
        }
    )
    worker = worker_spec(config, "v7")
    assert worker.options == {"num_cpus": 2, "num_gpus": 1, "resources": {"encoder_a10g": 0.01}}
    # The worker gets its own settings (pinned to the version), not a rewritten config.stream;
    # its process (not its constructor) takes backfill's torch threads.
    (settings,) = worker.args
    assert settings.model_version == "v7" and worker.process.torch_threads == 3
    assert sink_spec(config).options == {"num_cpus": 0.5, "resources": {"cpu_node": 0.01}}


def test_stream_actors_take_their_placement_from_config():
    from idproxy_stream.stream.pipeline import actor_specs

    config = config_from_dict(
        {
            "cluster": {
                "source_resources": {"cpu_node": 0.01},
                "worker_resources": {"encoder_l4": 0.5},
            }
        }
    )
    source = actor_specs(config, "lane-0")
    _, worker, sink, name = source.args
    assert name == "lane-0"
    assert source.options["resources"] == {"cpu_node": 0.01}
    assert worker.options["resources"] == {"encoder_l4": 0.5}
    assert "resources" not in sink.options  # nothing asked for sinks: placed anywhere
