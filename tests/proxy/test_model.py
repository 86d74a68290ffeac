"""ProxyModel: gate semantics, artefact round trip, fingerprint refusal."""

from __future__ import annotations

import json

import pytest
import torch

from idproxy_stream.encoders.layers import LayerClusters
from idproxy_stream.proxy.model import (
    ProxyManifest,
    ProxyModel,
    ProxyModelError,
    ProxyModelMismatchError,
    ProxyModelSpec,
    load_proxy_model,
    read_proxy_manifest,
    save_proxy_model,
)
from idproxy_stream.training.pipeline import ridge_blend

SPEC = ProxyModelSpec(
    encoder_dim=12,
    id_dim=4,
    clusters=LayerClusters((0, 2), 5),
    projector_hidden=8,
    adaptor_hidden=6,
)


def trained_looking_model(spec: ProxyModelSpec = SPEC) -> ProxyModel:
    torch.manual_seed(0)
    model = ProxyModel(spec)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        model.projector.scale.fill_(0.7)
        model.projector.centre.fill_(0.05)
    return model.eval()


def manifest(version="v1", encoder="enc-a", id_space="ids-a") -> ProxyManifest:
    return ProxyManifest(version, encoder, id_space, SPEC, {"items": 10}, {"auc": 0.7})


def test_closed_gate_returns_exactly_the_coarse_proxy():
    model = trained_looking_model(ProxyModelSpec(**{**SPEC.__dict__, "gate_closed": True}))
    global_embedding, clusters = torch.randn(5, 12), torch.randn(5, 2, 12)
    assert torch.equal(model(global_embedding, clusters), model.coarse(global_embedding))


def test_untrained_adaptor_adds_nothing_to_the_coarse_proxy():
    model = ProxyModel(SPEC).eval()
    global_embedding, clusters = torch.randn(5, 12), torch.randn(5, 2, 12)
    assert torch.equal(model(global_embedding, clusters), model.coarse(global_embedding))


def test_open_gate_adds_a_gated_fine_correction():
    model = trained_looking_model()
    global_embedding, clusters = torch.randn(5, 12), torch.randn(5, 2, 12)
    coarse = model.coarse(global_embedding)
    hidden, fine = model.adaptor(clusters)
    gate = model.gate.gate(coarse, hidden)
    assert ((gate > 0) & (gate < 1)).all()
    assert torch.allclose(model(global_embedding, clusters), coarse + gate * fine)


def test_artefact_round_trip_reproduces_proxies_and_manifest(tmp_path):
    model = trained_looking_model()
    save_proxy_model(model, manifest(), tmp_path / "m")
    loaded, loaded_manifest = load_proxy_model(tmp_path / "m", "enc-a", "ids-a")
    inputs = torch.randn(7, 12), torch.randn(7, 2, 12)
    assert torch.equal(loaded.predict(*inputs), model.predict(*inputs))
    assert loaded_manifest.version == "v1" and loaded_manifest.metrics == {"auc": 0.7}
    assert loaded_manifest.spec == SPEC


def test_a_ridge_blend_serves_the_weighted_mean_of_both_proxies_and_round_trips(tmp_path):
    served = trained_looking_model()
    ridge = trained_looking_model(
        ProxyModelSpec(
            **{
                **SPEC.__dict__,
                "projector_hidden": 0,
                "gate_closed": True,
                "coarse_unit_offsets": False,
            },
        )
    )
    ridge.projector.centre.fill_(-0.3)
    blended = ridge_blend(served, ridge, 0.25)
    inputs = torch.randn(6, 12), torch.randn(6, 2, 12)
    expected = 0.75 * served.predict(*inputs) + 0.25 * ridge.predict(*inputs)
    assert torch.allclose(blended.predict(*inputs), expected, atol=1e-6)
    assert ridge_blend(served, ridge, 0.0) is served and ridge_blend(served, ridge, 1.0) is ridge
    save_proxy_model(blended, manifest(), tmp_path / "m")
    loaded, loaded_manifest = load_proxy_model(tmp_path / "m", "enc-a", "ids-a")
    assert loaded_manifest.spec.ridge_weight == 0.25
    assert torch.allclose(loaded.predict(*inputs), expected, atol=1e-6)


def test_a_manifest_without_a_ridge_weight_loads_as_no_blend(tmp_path):
    save_proxy_model(trained_looking_model(), manifest(), tmp_path / "m")
    path = tmp_path / "m" / "manifest.json"
    raw = json.loads(path.read_text())
    del raw["spec"]["ridge_weight"]
    path.write_text(json.dumps(raw))
    loaded, _ = load_proxy_model(tmp_path / "m", "enc-a", "ids-a")
    assert loaded.ridge is None and loaded.spec.ridge_weight == 0.0
    raw["spec"]["ridge_weight"] = 1.5
    path.write_text(json.dumps(raw))
    with pytest.raises(ProxyModelError, match=r"spec.ridge_weight must lie in \[0, 1\)"):
        load_proxy_model(tmp_path / "m", "enc-a", "ids-a")


@pytest.mark.parametrize(
    ("encoder", "id_space", "message"),
    [("enc-b", "ids-a", "trained on encoder enc-a"), ("enc-a", "ids-b", "targets ID space ids-a")],
)
def test_loading_refuses_another_encoder_or_id_space(tmp_path, encoder, id_space, message):
    save_proxy_model(trained_looking_model(), manifest(), tmp_path / "m")
    with pytest.raises(ProxyModelMismatchError, match=message):
        load_proxy_model(tmp_path / "m", encoder, id_space)


def test_missing_or_foreign_artefacts_are_reported(tmp_path):
    with pytest.raises(ProxyModelError, match="holds no ProxyModel"):
        read_proxy_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ProxyModelError, match="format"):
        read_proxy_manifest(tmp_path)


# ------------------------------------------------------ artefacts verified on load (issue 12)


def test_weights_with_flipped_values_are_refused_by_the_recorded_digest(tmp_path):
    from safetensors.torch import load_file, save_file

    directory = save_proxy_model(trained_looking_model(), manifest(), tmp_path / "m")
    weights = directory / "proxy_model.safetensors"
    state = load_file(str(weights))
    save_file({name: -tensor for name, tensor in state.items()}, str(weights))  # same shapes
    with pytest.raises(ProxyModelError, match=r"proxy_model\.safetensors does not match the SHA"):
        load_proxy_model(directory)


def test_truncated_weights_are_refused_naming_the_file(tmp_path):
    directory = save_proxy_model(trained_looking_model(), manifest(), tmp_path / "m")
    weights = directory / "proxy_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ProxyModelError, match=str(weights)):
        load_proxy_model(directory)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: "{not json", "cannot be read as JSON"),
        (lambda raw: json.dumps({k: v for k, v in raw.items() if k != "spec"}), "lacks the key"),
        (lambda raw: json.dumps({**raw, "spec": {**raw["spec"], "dropout": "NaN"}}), "dropout"),
        (lambda raw: json.dumps(raw).replace('"dropout": 0.1', '"dropout": NaN'), "non-finite"),
        (lambda raw: json.dumps({**raw, "version": "v2\n"}), "is not allowed"),
        (lambda raw: json.dumps({**raw, "spec": {**raw["spec"], "id_dim": -4}}), "id_dim"),
        (lambda raw: json.dumps({k: v for k, v in raw.items() if k != "files"}), "digests"),
    ],
)
def test_a_damaged_manifest_is_one_error_naming_the_file(tmp_path, damage, message):
    directory = save_proxy_model(trained_looking_model(), manifest(), tmp_path / "m")
    path = directory / "manifest.json"
    path.write_text(damage(json.loads(path.read_text())))
    with pytest.raises(ProxyModelError, match=message) as caught:
        load_proxy_model(directory)
    assert str(path) in str(caught.value) or "digests" in message
    assert "\n" not in str(caught.value)
