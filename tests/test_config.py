"""Configuration: YAML + environment overrides, and errors that say what to fix."""

from __future__ import annotations

import pytest

from idproxy_stream.config import AppConfig, ConfigError, load_config, resolve_secret


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
