"""The shared KV cache, and cached decoding of the LlamaGen GPT against its uncached forward."""

from __future__ import annotations

import pytest
import torch
from llamagen_layout import TINY, random_official_state_dict

from genzoo.backbones.gpt import GPT, GPTConfig
from genzoo.errors import GenzooError
from genzoo.nn.kv_cache import KVCache, causal_mask_from
from genzoo.zoo.llamagen import load_llamagen

pytestmark = pytest.mark.usefixtures("one_thread")


def test_update_writes_at_the_positions_and_returns_the_prefix():
    cache = KVCache(2, 6, 3, 4)
    k1, v1 = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    k_all, v_all = cache.update(0, k1, v1)
    assert torch.equal(k_all, k1) and torch.equal(v_all, v1)
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    k_all, v_all = cache.update(2, k2, v2)
    assert torch.equal(k_all, torch.cat([k1, k2], dim=2))
    assert torch.equal(v_all, torch.cat([v1, v2], dim=2))
    assert not cache.k_cache[:, :, 3:].any()  # later positions untouched
    assert list(cache.state_dict()) == []  # never saved with a model


def test_feeding_past_the_cache_is_a_clear_error():
    cache = KVCache(1, 4, 2, 4)
    with pytest.raises(GenzooError, match=r"length 5 exceeds the KV cache of length 4.*max_len"):
        cache.update(3, torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))
    with pytest.raises(GenzooError, match="batch_size=3"):
        cache.update(0, torch.zeros(3, 2, 1, 4), torch.zeros(3, 2, 1, 4))


def test_padded_buffers_keep_the_requested_length():
    cache = KVCache(1, 5, 2, 4, pad_to=8)  # LlamaGen's buffers: a multiple of 8
    assert cache.k_cache.shape == (1, 2, 8, 4) and cache.max_len == 5
    cache.update(0, torch.ones(1, 2, 5, 4), torch.ones(1, 2, 5, 4))
    assert cache.k_cache[:, :, :5].all() and not cache.k_cache[:, :, 5:].any()
    with pytest.raises(GenzooError, match="length 6 exceeds the KV cache of length 5"):
        cache.update(5, torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))


def test_causal_mask_from_a_start_position():
    assert causal_mask_from(5, 1) is None  # one query sees every cached key
    mask = causal_mask_from(2, 3)
    want = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool
    )  # query 2+i sees keys 0 … 2+i
    assert torch.equal(mask, want)
    padded = causal_mask_from(2, 1, keys=8)  # one query against a whole padded buffer
    assert padded.tolist() == [[True, True, True, False, False, False, False, False]]


@pytest.mark.parametrize(
    "extra", [{}, {"n_kv_head": 2}, {"qk_norm": True}, {"class_dropout_prob": 0.0}]
)
def test_cached_decoding_equals_the_uncached_forward(extra):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY, **extra)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    n = TINY["block_size"]
    tokens = torch.randint(0, TINY["vocab_size"], (3, n))
    y = torch.tensor([0, 4, 9])
    with torch.no_grad():
        full = model(tokens, y)
        model.setup_cache(3)
        steps = [model.decode(None, y, start=0)]
        steps += [model.decode(tokens[:, i : i + 1], None, start=1 + i) for i in range(n - 1)]
        torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=1e-5, atol=1e-5)
        # several positions per call: the class token with 5 tokens, then a chunk of 7
        model.setup_cache(3)
        torch.testing.assert_close(model.decode(tokens[:, :5], y, 0), full[:, 5], atol=1e-5, rtol=0)
        chunk = model.decode(tokens[:, 5:12], None, 6)
        torch.testing.assert_close(chunk, full[:, 12], atol=1e-5, rtol=0)
    assert not any("cache" in k for k in model.state_dict())
    model.clear_cache()
    with pytest.raises(GenzooError, match="setup_cache"):
        model.decode(None, y, 0)


def test_decoding_limits_are_genzoo_errors():
    model, _ = load_llamagen(random_official_state_dict(0, **TINY), device="cpu", **TINY)
    y = torch.tensor([1])
    model.setup_cache(1, max_len=4)
    model.decode(None, y, 0)
    model.decode(torch.tensor([[3, 4, 5]]), None, 1)
    with pytest.raises(GenzooError, match="length 5 exceeds the KV cache of length 4"):
        model.decode(torch.tensor([[6]]), None, 4)
    with pytest.raises(GenzooError, match="only 37 positions"):
        model.setup_cache(1, max_len=38)
    with pytest.raises(GenzooError, match="class token sits at position 0"):
        model.decode(None, y, 2)
    with pytest.raises(GenzooError, match="vocabulary"):
        model.decode(torch.tensor([[64]]), None, 1)
    model.clear_cache()
