import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from idproxy_stream.encoders.pooling import (
    last_token_states,
    masked_mean_tokens,
    pool_hidden_states,
)


@st.composite
def states_and_mask(draw):
    batch = draw(st.integers(1, 4))
    tokens = draw(st.integers(1, 8))
    width = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, tokens, width, generator=generator)
    lengths = draw(st.lists(st.integers(1, tokens), min_size=batch, max_size=batch))
    left_padded = draw(st.booleans())
    mask = torch.zeros(batch, tokens, dtype=torch.long)
    for row, length in enumerate(lengths):
        if left_padded:
            mask[row, tokens - length :] = 1
        else:
            mask[row, :length] = 1
    return hidden, mask


@settings(max_examples=60, deadline=None)
@given(states_and_mask(), st.sampled_from([float("nan"), float("inf"), 1e6, -3.0]))
def test_padding_values_never_change_the_pooled_states(data, junk):
    hidden, mask = data
    poisoned = hidden.clone()
    poisoned[mask == 0] = junk
    assert torch.equal(masked_mean_tokens(hidden, mask), masked_mean_tokens(poisoned, mask))
    assert torch.equal(last_token_states(hidden, mask), last_token_states(poisoned, mask))


@settings(max_examples=40, deadline=None)
@given(states_and_mask())
def test_masked_mean_equals_mean_of_the_real_tokens(data):
    hidden, mask = data
    pooled = masked_mean_tokens(hidden, mask)
    for row in range(hidden.shape[0]):
        expected = hidden[row][mask[row].bool()].mean(dim=0)
        torch.testing.assert_close(pooled[row], expected)


def test_last_token_is_the_last_real_position_for_left_and_right_padding():
    hidden = torch.arange(2 * 4, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    assert last_token_states(hidden, right).flatten().tolist() == [1.0, 7.0]
    assert last_token_states(hidden, left).flatten().tolist() == [3.0, 7.0]


def test_pool_hidden_states_stacks_layers_in_order():
    layers = [torch.full((2, 3, 4), float(index)) for index in range(5)]
    pooled = pool_hidden_states(layers, torch.ones(2, 3))
    assert pooled.shape == (2, 5, 4)
    assert pooled[:, :, 0].tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0]] * 2
