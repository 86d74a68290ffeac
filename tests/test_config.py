"""Configuration: YAML + environment overrides, and errors that say what to fix."""

from __future__ import annotations

import pytest
import yaml

from idproxy_stream.config import (
    AppConfig,
    ConfigError,
    WorkerPoolConfig,
    config_from_dict,
    load_config,
    resolve_secret,
    with_updates,
)


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_load_without_a_file():
    assert load_config(None, environ={}) == AppConfig()


def test_yaml_values_are_read_into_frozen_models(tmp_path):
    config = load_config(write(tmp_path, "stream:\n  num_workers: 3\nranker:\n  id_dim: 8\n"), {})
    assert config.stream.num_workers == 3 and config.ranker.id_dim == 8
    with pytest.raises(ValueError):
        config.stream.num_workers = 4  # frozen


def test_unknown_key_is_named_with_the_file(tmp_path):
    path = write(tmp_path, "stream:\n  num_wrokers: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, {})
    assert "stream.num_wrokers" in str(error.value)
    assert str(path) in str(error.value)
    assert "unknown key" in str(error.value)


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'streem'"):
        load_config(write(tmp_path, "streem: {}\n"), {})


def test_invalid_value_names_the_key_and_the_value(tmp_path):
    with pytest.raises(ConfigError, match=r"'stream\.num_workers'.*got 0"):
        load_config(write(tmp_path, "stream:\n  num_workers: 0\n"), {})


def test_cross_field_rule_explains_the_fix(tmp_path):
    text = "split:\n  cold_min: 10\n  warmup_size: 5\n"
    with pytest.raises(ConfigError, match=r"cold_min must exceed 3 \* split\.warmup_size"):
        load_config(write(tmp_path, text), {})


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "stream:\n  num_workers: 3\n")
    environ = {
        "IDPROXY__STREAM__NUM_WORKERS": "5",
        "IDPROXY__KAFKA__BOOTSTRAP_SERVERS": "kafka:9092",
        "IDPROXY__RANKER__MLP_HIDDEN": "[32, 16]",
        "UNRELATED": "x",
    }
    config = load_config(path, environ)
    assert config.stream.num_workers == 5
    assert config.kafka.bootstrap_servers == "kafka:9092"
    assert config.ranker.mlp_hidden == (32, 16)


def test_misspelt_environment_override_is_an_error():
    with pytest.raises(ConfigError, match=r"stream\.wrkers"):
        load_config(None, {"IDPROXY__STREAM__WRKERS": "2"})


@pytest.mark.parametrize(
    ("text", "message"),
    [("stream: [1, 2", "not valid YAML"), ("- a\n- b\n", "mapping of sections")],
)
def test_unreadable_files_fail_at_start_up(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), {})


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", {})


def test_movielens_without_a_path_fails_at_start_up(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        load_config(write(tmp_path, "data:\n  name: ml-100k\n"), {})


def test_secrets_come_from_the_named_environment_variable():
    assert resolve_secret("REDIS_PASSWORD", {"REDIS_PASSWORD": "s3cret"}) == "s3cret"
    assert resolve_secret(None, {}) is None
    with pytest.raises(ConfigError, match="REDIS_PASSWORD"):
        resolve_secret("REDIS_PASSWORD", {})


def test_overrides_go_through_validation_and_name_the_bad_key():
    config = AppConfig()
    changed = with_updates(config, stream=with_updates(config.stream, num_workers=4))
    assert changed.stream.num_workers == 4 and config.stream.num_workers == 2
    with pytest.raises(ConfigError, match=r"'num_workers'.*got 0"):
        with_updates(config.stream, num_workers=0)
    with pytest.raises(ConfigError, match="unknown key 'num_wrokers'"):
        with_updates(config.stream, num_wrokers=3)
    with pytest.raises(ConfigError, match="resume_below must be lower"):
        with_updates(config.stream, resume_below=5_000)  # cross-field rules run too


def test_extract_stream_and_backfill_spell_their_worker_pools_the_same_way():
    config = config_from_dict(
        {
            "extract": {"num_workers": 3, "torch_threads_per_worker": 2},
            "stream": {"num_workers": 4, "worker_num_gpus": 1},
            "backfill": {"num_workers": 5, "worker_queue_depth": 3},
        }
    )
    pools = [config.extract, config.stream, config.backfill]
    assert [type(pool.worker_pool()) for pool in pools] == [WorkerPoolConfig] * 3
    assert [pool.worker_pool().num_workers for pool in pools] == [3, 4, 5]
    assert config.stream.worker_pool().worker_num_gpus == 1
    assert config.backfill.worker_pool().worker_queue_depth == 3


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"extract": {"text_fields": ["title"]}}, "encoder.text_fields"),
        ({"extract": {"num_actors": 2}}, "extract.num_workers"),
        ({"backfill": {"batches_in_flight_per_worker": 2}}, "backfill.worker_queue_depth"),
        ({"encoder": {"text": {"num_threads": 2}}}, "ranker.num_threads"),
    ],
)
def test_a_moved_key_says_where_the_setting_lives_now(raw, where):
    with pytest.raises(ConfigError, match="moved") as error:
        config_from_dict(raw)
    assert where in str(error.value)


# ------------------------------------------------------- secrets and bounded errors (issue 12)

PASSWORD = "hunter2 s3cr3t!"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"store": {"redis": {"password_env": PASSWORD}}}, "store.redis.password_env"),
        ({"store": {"redis": {"username_env": PASSWORD}}}, "store.redis.username_env"),
        ({"kafka": {"sasl_password_env": PASSWORD}}, "kafka.sasl_password_env"),
        ({"kafka": {"sasl_username_env": "9starts-with-a-digit"}}, "kafka.sasl_username_env"),
        (
            {"kafka": {"consumer_extra": {"ssl_password_env": PASSWORD}}},
            "kafka.consumer_extra.ssl_password_env",
        ),
        (
            {"kafka": {"producer_extra": {"ssl_password_env": 12345}}},
            "kafka.producer_extra.ssl_password_env",
        ),
    ],
)
def test_a_secret_pasted_into_an_env_setting_is_refused_without_echoing_it(raw, key):
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw, "settings.yaml")
    message = str(caught.value)
    assert key in message and "name of an environment variable" in message
    assert PASSWORD not in message and "hunter2" not in message and "12345" not in message
    assert "\n" not in message


def test_resolve_secret_refuses_a_value_that_is_no_variable_name_without_echoing_it():
    with pytest.raises(ConfigError, match="name of an environment variable") as caught:
        resolve_secret(PASSWORD, {PASSWORD: "x"})
    assert "hunter2" not in str(caught.value)
    assert resolve_secret("REDIS_PASSWORD", {"REDIS_PASSWORD": "x"}) == "x"


def test_a_billion_laughs_config_fails_fast_with_a_bounded_message(tmp_path):
    """Nine levels of nine aliases: 9**9 strings when expanded; the repr in the error used to
    expand them all (10 GB in 60 s)."""
    lines = ["anchors:", '  a0: &a0 ["lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"  a{level}: &a{level} [{refs}]")
    path = write(tmp_path, "\n".join([*lines, "stream:", "  num_workers: *a9", ""]))
    raw = yaml.safe_load(path.read_text())
    raw.pop("anchors")
    with pytest.raises(ConfigError) as caught:
        config_from_dict(raw, str(path))
    message = str(caught.value)
    assert "stream.num_workers" in message and len(message) < 500


def test_worker_deaths_have_a_limit_at_least_as_large_as_the_attempts():
    assert AppConfig().stream.max_worker_deaths >= AppConfig().stream.max_attempts
    with pytest.raises(ConfigError, match="max_worker_deaths must be at least"):
        config_from_dict({"stream": {"max_attempts": 5, "max_worker_deaths": 2}})
