"""The model registry: publish, LATEST pointer, safe version names."""

from __future__ import annotations

import pytest
import torch

from idproxy_stream.proxy.model import ProxyModelError
from idproxy_stream.proxy.registry import (
    latest_version,
    list_versions,
    load_version,
    publish_version,
    remove_version,
    set_latest,
)
from proxy.test_model import manifest, trained_looking_model


def test_publishing_moves_latest_and_keeps_older_versions(tmp_path):
    assert latest_version(tmp_path) is None
    publish_version(trained_looking_model(), manifest("v1"), tmp_path)
    publish_version(trained_looking_model(), manifest("v2"), tmp_path)
    assert latest_version(tmp_path) == "v2"
    assert list_versions(tmp_path) == ["v1", "v2"]
    model, loaded = load_version(tmp_path)
    assert loaded.version == "v2"
    set_latest(tmp_path, "v1")
    assert load_version(tmp_path)[1].version == "v1"
    assert isinstance(model.predict(torch.randn(2, 12), torch.randn(2, 2, 12)), torch.Tensor)


def test_a_version_cannot_be_published_twice_or_removed_while_serving(tmp_path):
    publish_version(trained_looking_model(), manifest("v1"), tmp_path)
    with pytest.raises(ProxyModelError, match="already exists"):
        publish_version(trained_looking_model(), manifest("v1"), tmp_path)
    with pytest.raises(ProxyModelError, match="serving"):
        remove_version(tmp_path, "v1")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_unsafe_version_names_are_refused(tmp_path, name):
    with pytest.raises(ProxyModelError, match="not allowed"):
        publish_version(trained_looking_model(), manifest(name), tmp_path)


def test_loading_from_an_empty_registry_says_to_train_first(tmp_path):
    with pytest.raises(ProxyModelError, match="idproxy train"):
        load_version(tmp_path)


def test_a_version_name_with_a_newline_is_refused(tmp_path):
    with pytest.raises(ProxyModelError, match="is not allowed"):
        publish_version(trained_looking_model(), manifest("v2\n"), tmp_path)


def test_a_manifest_whose_version_differs_from_its_directory_is_refused(tmp_path):
    publish_version(trained_looking_model(), manifest("v1"), tmp_path)
    (tmp_path / "versions" / "v1").rename(tmp_path / "versions" / "v9")
    set_latest(tmp_path, "v9")
    with pytest.raises(ProxyModelError, match=r"says version 'v1'.*directory of version 'v9'"):
        load_version(tmp_path)


def test_a_version_directory_linked_out_of_the_registry_is_refused(tmp_path):
    outside = tmp_path / "elsewhere"
    publish_version(trained_looking_model(), manifest("v1"), outside)
    registry = tmp_path / "registry"
    (registry / "versions").mkdir(parents=True)
    (registry / "versions" / "v1").symlink_to(outside / "versions" / "v1")
    set_latest(registry, "v1")
    with pytest.raises(ProxyModelError, match="link out of the registry"):
        load_version(registry)
