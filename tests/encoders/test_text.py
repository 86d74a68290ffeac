import pytest
import torch
from sentence_transformers import SentenceTransformer

from idproxy_stream.config import EncoderConfig, TextEncoderConfig
from idproxy_stream.encoders.base import ContentItem, EncoderOutput, build_encoder
from idproxy_stream.encoders.checkpoints import CheckpointError
from idproxy_stream.encoders.registry import encoder_fingerprint
from idproxy_stream.encoders.text import TextEncoder, default_text_model_path

TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy",
    "A detective hunts a killer through a rainy city.",
    "",
    "Short",
]


def test_global_embedding_equals_sentence_transformers(minilm):
    reference = SentenceTransformer(str(default_text_model_path()), device="cpu")
    expected = torch.from_numpy(reference.encode(TEXTS, batch_size=8))
    output = minilm.encode([ContentItem(text) for text in TEXTS])
    torch.testing.assert_close(output.global_embedding, expected, atol=2e-5, rtol=1e-4)


def test_layer_states_hold_every_hidden_state_masked_mean_pooled(minilm):
    output = minilm.encode([ContentItem(text) for text in TEXTS])
    assert isinstance(output, EncoderOutput)
    assert (minilm.num_layers, minilm.hidden_size) == (7, 384)
    assert output.layer_states.shape == (4, 7, 384)
    assert output.layer_states.dtype == torch.float32
    # Unnormalised last-layer mean, normalised, is the global embedding.
    torch.testing.assert_close(
        torch.nn.functional.normalize(output.layer_states[:, -1], dim=-1),
        output.global_embedding,
    )


def test_an_item_encodes_the_same_alone_and_beside_longer_items(minilm):
    alone = minilm.encode([ContentItem("Short")])
    batched = minilm.encode([ContentItem(text) for text in TEXTS])
    torch.testing.assert_close(batched.layer_states[3], alone.layer_states[0], atol=1e-5, rtol=1e-5)


def test_long_text_is_truncated_flagged_and_counted_not_dropped():
    encoder = TextEncoder(TextEncoderConfig(max_tokens=16))
    long_text = "word " * 100
    output = encoder.encode([ContentItem(long_text), ContentItem("short text")])
    assert output.truncated == (True, False)
    assert encoder.truncated_items == 1
    exact = TextEncoder(TextEncoderConfig(max_tokens=16)).encode([ContentItem("word " * 14)])
    assert exact.truncated == (False,)  # 14 words + [CLS] [SEP] fit exactly


def test_fingerprint_is_stable_and_changes_with_output_settings(minilm):
    config = EncoderConfig(kind="text")
    assert encoder_fingerprint(config) == minilm.fingerprint
    other = EncoderConfig(kind="text", text=TextEncoderConfig(max_tokens=128))
    assert encoder_fingerprint(other) != minilm.fingerprint


def test_cls_pooling_takes_the_first_token_state():
    encoder = build_encoder(
        EncoderConfig(text=TextEncoderConfig(global_pooling="cls", normalize=False))
    )
    output = encoder.encode([ContentItem("Toy Story")])
    assert not torch.allclose(output.global_embedding, output.layer_states[:, -1])
    assert output.global_embedding.norm() > 1.5  # unnormalised


def test_missing_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        TextEncoder(TextEncoderConfig(model=str(tmp_path / "nope")))


def test_uncached_hub_id_offline_is_a_clear_error():
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        TextEncoder(TextEncoderConfig(model="someone/not-a-cached-model"))


def test_empty_batch_gives_empty_outputs(minilm):
    output = minilm.encode([])
    assert output.global_embedding.shape == (0, 384)
    assert output.layer_states.shape == (0, 7, 384)


def test_segment_pooling_weighs_each_line_equally(minilm):
    title, plot = "Toy Story (1995). Genres: Animation", "A cowboy doll " * 30
    both = minilm.encode([ContentItem(f"{title}\n{plot}")])
    apart = minilm.encode([ContentItem(title), ContentItem(plot)])
    expected_layers = apart.layer_states.mean(0, keepdim=True)
    assert torch.allclose(both.layer_states, expected_layers, atol=1e-5)
    expected_global = torch.nn.functional.normalize(apart.layer_states[:, -1].mean(0), dim=-1)
    assert torch.allclose(both.global_embedding[0], expected_global, atol=1e-5)


def test_without_segment_pooling_lines_are_encoded_as_one_text():
    config = TextEncoderConfig(segment_pooling=False)
    encoder = TextEncoder(config)
    joined = encoder.encode([ContentItem("Toy Story\nA cowboy doll")])
    pooled = TextEncoder(TextEncoderConfig()).encode([ContentItem("Toy Story\nA cowboy doll")])
    assert not torch.allclose(joined.global_embedding, pooled.global_embedding)
    assert encoder.fingerprint != TextEncoder(TextEncoderConfig()).fingerprint
