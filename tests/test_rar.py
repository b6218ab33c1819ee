"""Official RAR generator: layout, strict loading, forward against a slow re-computation of the
specification, the `orders` semantics, KV-cached decoding, and the official seeded sampler."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from rar_layout import (
    PUBLISHED,
    RELEASED,
    TINY,
    random_rar_state_dict,
    rar_shapes,
    reference_logits,
)
from safetensors.torch import save_file

from genzoo.backbones.rar import RAR, RAR_SIZES, RARConfig
from genzoo.errors import GenzooError
from genzoo.families.autoregressive import ARConfig, Autoregressive
from genzoo.zoo.rar import build_rar, infer_rar_config, load_rar, rar_config

V, L, K = TINY["codebook_size"], TINY["image_seq_len"], TINY["condition_num_classes"]


@pytest.fixture(scope="module")
def state():
    return random_rar_state_dict(seed=0)


@pytest.fixture(scope="module")
def pipe(state):
    return load_rar(state, device="cpu")


def _tokens(batch: int, seed: int = 1, length: int = L) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def _orders(batch: int, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(L, generator=gen) for _ in range(batch)])


def official_generate(model, y, cfg, cfg_pow, temperature):
    """The official sampling loop re-enacted from spec §2 'Sampling' and §4, uncached."""
    n = y.shape[0]
    _ = torch.rand_like(y, dtype=torch.float) < 0.0  # the label shift's dropout draw
    ids = torch.zeros(n, 0, dtype=torch.long)
    with torch.no_grad():
        for step in range(L):
            power = torch.ones(1) * cfg_pow
            scale = (cfg - 1) * ((1 - torch.cos(((step / L) ** power) * torch.pi)) / 2) + 1
            if cfg != 0:
                logits = model(torch.cat([ids, ids]), torch.cat([y, torch.full_like(y, K)]))
                cond, uncond = logits[:n], logits[n:]
                logits = uncond + (cond - uncond) * scale
            else:
                logits = model(ids, y)
            probs = torch.softmax(logits[:, -1] / temperature, dim=-1)
            ids = torch.cat([ids, torch.multinomial(probs, 1)], dim=1)
    return ids


# -- layout and loading ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", ["B", "L", "XL", "XXL"])
def test_published_sizes_have_the_official_keys_shapes_and_counts(size):
    extra, count = PUBLISHED[size]
    args = {**RELEASED, **extra, "num_attention_heads": 16}
    with torch.device("meta"):
        model = RAR(rar_config(size))
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == rar_shapes(**args)
    assert sum(math.prod(s) for _, s in got) == count
    assert len(got) == 9 + 18 * extra["num_hidden_layers"]
    assert RAR_SIZES[size] == {k: args[k] for k in RAR_SIZES[size]}


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_official_files_load_strictly_with_inferred_arguments(tmp_path, state, suffix):
    path = tmp_path / f"rar{suffix}"
    if suffix == ".bin":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    pipe = load_rar(path, device="cpu")
    assert not pipe.model.training and pipe.device == torch.device("cpu")
    assert {k: getattr(pipe.config, k) for k in TINY} == TINY
    assert infer_rar_config(state) == TINY
    loaded = pipe.model.state_dict()
    assert list(loaded) == [k for k, _ in rar_shapes(**TINY)]
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    # the generic names a genzoo run fills
    assert (pipe.config.vocab_size, pipe.config.block_size, pipe.config.num_classes) == (V, L, K)


def test_layout_mismatches_raise_clear_errors(state):
    missing = {k: v for k, v in state.items() if k != "blocks.1.attn.k_norm.bias"}
    with pytest.raises(GenzooError, match=r"missing keys \(1\): blocks\.1\.attn\.k_norm\.bias"):
        build_rar(missing)
    with pytest.raises(GenzooError, match=r"unexpected keys \(1\): attn_mask"):
        build_rar({**state, "attn_mask": torch.zeros(3, 3)})
    with pytest.raises(GenzooError, match=r"mis-shaped.*blocks\.0\.mlp\.fc1\.weight"):
        build_rar(state, intermediate_size=48)
    dit = dict.fromkeys(["x_embedder.proj.weight", "t_embedder.mlp.0.weight"], torch.zeros(1))
    with pytest.raises(GenzooError, match="does not hold RAR weights: it looks like an official"):
        build_rar(dit)
    with pytest.raises(GenzooError, match="unknown RAR argument.*depth"):
        build_rar(state, depth=2)
    with pytest.raises(GenzooError, match="must be divisible|not divisible"):
        RAR(RARConfig(**{**TINY, "num_attention_heads": 5}))
    with pytest.raises(GenzooError, match="unknown RAR size"):
        rar_config("XS")


# -- forward --------------------------------------------------------------------------------------


def test_forward_matches_the_specification_in_raster_and_random_orders(pipe, state):
    tokens, y = _tokens(3), torch.tensor([0, 4, K])  # K: the null class
    out = pipe.model(tokens, y)
    assert out.shape == (3, L + 1, V) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference_logits(state, tokens, y), atol=2e-5, rtol=1e-5)
    orders = _orders(3)
    out = pipe.model(tokens, y, orders)
    torch.testing.assert_close(
        out, reference_logits(state, tokens, y, orders), atol=2e-5, rtol=1e-5
    )
    in_order = tokens.gather(1, orders)  # the `ar` family's view: tokens in generation order
    assert torch.equal(pipe.model.teacher_forcing_logits(in_order, y, orders), out[:, :-1])
    short = _tokens(2, length=4)  # a prefix in raster order, as the sampler feeds it
    torch.testing.assert_close(
        pipe.model(short, y[:2]), reference_logits(state, short, y[:2]), atol=2e-5, rtol=1e-5
    )


def test_orders_equal_raster_order_on_permuted_tokens_and_tables(pipe, state):
    """Row i predicts tokens[orders[i]]: feeding tokens[:, o] in raster order to a copy whose
    position tables are permuted the same way must give the same logits."""
    o = torch.randperm(L, generator=torch.Generator().manual_seed(5))
    tokens, y = _tokens(2, seed=6), torch.tensor([1, 3])
    permuted = dict(state)
    for key in ("pos_embed", "target_aware_pos_embed"):
        table = state[key].clone()
        table[0, 2 : 2 + L] = state[key][0, 2 + o]
        permuted[key] = table
    other = load_rar(permuted, device="cpu").model
    with torch.no_grad():
        shuffled = pipe.model(tokens, y, o.expand(2, L))
        raster = other(tokens[:, o], y)
    torch.testing.assert_close(shuffled, raster, atol=1e-5, rtol=1e-5)


def test_outputs_are_causal_in_the_given_order(pipe):
    tokens, y, orders = _tokens(1, seed=7), torch.tensor([2]), _orders(1, seed=8)
    j = 4
    changed = tokens.clone()
    changed[0, orders[0, j]] = (changed[0, orders[0, j]] + 1) % V
    with torch.no_grad():
        a, b = pipe.model(tokens, y, orders), pipe.model(changed, y, orders)
    assert torch.equal(a[:, : j + 1], b[:, : j + 1])  # rows up to j do not see token j
    assert not torch.allclose(a[:, j + 1 :], b[:, j + 1 :])


def test_training_mode_label_dropout(state):
    model = build_rar(state, dropout=0.0, attn_drop=0.0, class_label_dropout=0.5)[0]
    tokens, y = _tokens(6, seed=9), torch.tensor([0, 1, 2, 3, 4, 0])
    with torch.no_grad():
        model.train()
        torch.manual_seed(3)
        dropped = model(tokens, y)
        torch.manual_seed(3)
        expected_y = torch.where(torch.rand(6) < 0.5, K, y)  # the official draw
        model.drop_labels_in_forward = False
        kept = model(tokens, y)
        model.eval()
        torch.testing.assert_close(dropped, model(tokens, expected_y))
        torch.testing.assert_close(kept, model(tokens, y))


# -- KV-cached decoding -------------------------------------------------------------------------


def test_cached_decoding_equals_teacher_forcing(pipe):
    model, tokens, y = pipe.model, _tokens(2, seed=10), torch.tensor([1, K])
    close = dict(atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        full = model(tokens, y)
        model.setup_cache(2)  # image token i sits at position 2 + i, after [cls, class]
        rows = [model.decode(None, y, 0)]
        rows += [model.decode(tokens[:, i : i + 1], None, 2 + i) for i in range(L - 1)]
        torch.testing.assert_close(torch.stack(rows, 1), full[:, :L], **close)
        model.setup_cache(2)  # chunks: the prefix with 3 tokens, then 5 more
        torch.testing.assert_close(model.decode(tokens[:, :3], y, 0), full[:, 3], **close)
        torch.testing.assert_close(model.decode(tokens[:, 3:8], y, 5), full[:, 8], **close)
    model.clear_cache()


def test_decoding_errors(pipe):
    model, y = pipe.model, torch.tensor([1])
    model.clear_cache()
    with torch.no_grad():
        with pytest.raises(GenzooError, match="setup_cache"):
            model.decode(None, y, 0)
        model.setup_cache(1, max_len=5)  # [cls, class] and 3 image tokens
        with pytest.raises(GenzooError, match="skips positions"):
            model.decode(_tokens(1)[:, :1], y, 2)
        model.decode(None, y, 0)
        with pytest.raises(GenzooError, match="start=1"):
            model.decode(_tokens(1)[:, :1], y, 1)
        model.decode(_tokens(1)[:, :3], y, 2)
        with pytest.raises(GenzooError, match="exceeds the KV cache of length 5"):
            model.decode(_tokens(1)[:, :1], y, 5)
        with pytest.raises(GenzooError, match="max_len"):
            model.setup_cache(1, max_len=L + 3)
    model.clear_cache()


def test_bad_forward_inputs(pipe):
    tokens, y = _tokens(2), torch.tensor([0, 1])
    bad = [
        ((tokens.clamp(max=V - 2) + 1).mul(2), y, None, r"tokens must lie in \[0, 15\]"),
        (tokens, torch.tensor([0, K + 1]), None, r"labels must lie in \[0, 5\]"),
        (tokens.float(), y, None, "long tensor"),
        (tokens, y[:1], None, "batch of 2"),
        (_tokens(2, length=L + 1), y, None, "image_seq_len"),
        (tokens, y, torch.zeros(2, L, dtype=torch.long), "permutation"),
        (tokens[:, :4], y, _orders(2), "all 9 tokens"),
    ]
    for t, labels, orders, message in bad:
        with pytest.raises(GenzooError, match=message):
            pipe.model(t, labels, orders)


# -- sampling -----------------------------------------------------------------------------------


# power-cosine, constant, weak (cfg < 1 still guides), none (cfg 0: one conditional pass)
SETTINGS = [(3.0, 2.0, 1.0), (2.5, 0.0, 1.02), (0.5, 1.0, 1.0), (0.0, 1.0, 0.9)]


@pytest.mark.parametrize("cfg, cfg_pow, temperature", SETTINGS)
def test_seeded_sampling_reproduces_the_official_loop(pipe, cfg, cfg_pow, temperature):
    y = torch.tensor([0, 3, 4])
    options = dict(cfg=cfg, cfg_pow=cfg_pow, temperature=temperature)
    torch.manual_seed(11)
    expected = official_generate(pipe.model, y, **options)
    after_official = torch.get_rng_state()
    for kv_cache in (True, False):
        torch.manual_seed(11)
        ids = pipe.sample_tokens(y, kv_cache=kv_cache, **options)
        assert ids.dtype == torch.long and ids.shape == (3, L)
        assert torch.equal(ids, expected)
        assert torch.equal(torch.get_rng_state(), after_official)  # no other global draws
    assert len(expected.unique()) > 3  # the draws are not degenerate


def test_per_sample_generators_are_independent_of_the_batch(pipe):
    y, seeds = torch.tensor([2, 0, 4]), [21, 22, 23]
    options = dict(cfg=3.0, cfg_pow=1.5, temperature=1.0)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    ids = pipe.sample_tokens(y, generator=gens, **options)
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)  # row i is the official run of that sample alone
        assert torch.equal(ids[i : i + 1], official_generate(pipe.model, y[i : i + 1], **options))
    alone = pipe.sample_tokens(y[1:2], generator=[torch.Generator().manual_seed(22)], **options)
    assert torch.equal(alone, ids[1:2])
    one = torch.Generator().manual_seed(11)  # a single generator: the official order from it
    torch.manual_seed(11)
    expected = official_generate(pipe.model, y, **options)
    assert torch.equal(pipe.sample_tokens(y, generator=one, **options), expected)


def test_sampling_defaults_and_bad_options(pipe):
    assert pipe.sampling_defaults() == dict(cfg=4.0, cfg_pow=0.0, temperature=1.0)
    bad = [
        (dict(y=[0, K + 1]), r"labels .* in \[0, 5\]"),
        (dict(y=[0], temperature=0.0), "temperature=0.0"),
        (dict(y=[0], cfg_pow=-1.0), "cfg_pow=-1.0"),
        (dict(y=[0, 1], generator=[torch.Generator()]), "1 generators for 2 labels"),
        (dict(y=[0], generator=["seed"]), "torch.Generator"),
    ]
    for kwargs, message in bad:
        with pytest.raises(GenzooError, match=message):
            pipe.sample_tokens(**kwargs)


def test_the_ar_family_samples_through_the_decode_contract(pipe):
    """genzoo's `ar` sampler (prefix_len, block_size, setup_cache, decode) on the RAR network
    equals the same guided loop run here on the uncached forward, draw for draw."""
    y, seeds = torch.tensor([1, 4]), (31, 32)
    family = Autoregressive(ARConfig())
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    options = dict(cfg=2.0, cfg_schedule="power-cosine", cfg_pow=1.0, temperature=1.0)
    ids = family.sample(pipe.model, y, generators=gens, null_label=K, **options)
    assert ids.shape == (2, 3, 3)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    expected = torch.zeros(2, 0, dtype=torch.long)
    with torch.no_grad():
        for step in range(L):
            logits = pipe.model(torch.cat([expected, expected]), torch.tensor([1, 4, K, K]))[:, -1]
            ramp = (1 - torch.cos(((step / L) ** (torch.ones(1) * 1.0)) * torch.pi)) / 2
            scale = float(1 + (2.0 - 1) * ramp)
            probs = torch.softmax(logits[2:] + (logits[:2] - logits[2:]) * scale, dim=-1)
            drawn = [torch.multinomial(p[None], 1, generator=g) for p, g in zip(probs, gens)]
            expected = torch.cat([expected, torch.cat(drawn)], dim=1)
    assert torch.equal(ids.reshape(2, L), expected)


def test_genzoo_runs_train_through_the_ar_family_view(pipe, state):
    """resolve() fills sizes from a tokenizer and selects forward_view "ar", where forward is
    teacher_forcing_logits, so the family's loss (also through a DDP wrapper) is the official
    cross-entropy of positions 0..L−1 against the permuted tokens."""

    class Codebook:  # a discrete tokenizer: 1/3 the resolution, V codes
        spec, vocab_size = "vq", V

        def latent_shape(self, res):
            return (res // 3, res // 3)

    sizes = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    cfg = RARConfig(**{k: TINY[k] for k in sizes})  # V, L, K still the released 1024, 256, 1000
    RAR.resolve(cfg, res=9, tokenizer=Codebook(), num_classes=K, family=None)
    assert (cfg.codebook_size, cfg.image_seq_len, cfg.condition_num_classes) == (V, L, K)
    assert cfg.forward_view == "ar"
    with pytest.raises(GenzooError, match="discrete"):
        RAR.resolve(cfg, res=9, tokenizer=object(), num_classes=K, family=None)
    net = RAR(cfg)
    net.load_state_dict(state)
    net.eval()
    family = Autoregressive(ARConfig(order="random"))
    tokens, y = _tokens(2, seed=12), torch.tensor([0, 3])
    with torch.no_grad():
        loss = family.loss(
            net, tokens.reshape(2, 3, 3), y, generator=torch.Generator().manual_seed(4)
        )
        orders = family.draw_orders(2, L, torch.Generator().manual_seed(4), 0, 1)
        assert not torch.equal(orders, torch.arange(L).expand(2, L))
        official = pipe.model(tokens, y, orders)[:, :-1]
        expected = F.cross_entropy(official.reshape(-1, V), tokens.gather(1, orders).reshape(-1))
    torch.testing.assert_close(loss["loss"], expected, atol=1e-5, rtol=1e-5)
