"""LlamaGen GPT: official layout, strict loading, logits, the official sampler, the `ar` family."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from llamagen_layout import (
    KIND_KEYS,
    PUBLISHED,
    TINY,
    hidden_width,
    official_shapes,
    random_official_state_dict,
    reference_logits,
    reference_sample,
    rope_angle,
)
from safetensors.torch import save_file

from genzoo.backbones.gpt import GPT, LLAMAGEN_SIZES, GPTConfig, apply_rope, rope_2d_table
from genzoo.errors import GenzooError
from genzoo.families.autoregressive import ARConfig, Autoregressive, random_order_probability
from genzoo.zoo.kinds import KINDS, guess_kind
from genzoo.zoo.llamagen import LlamaGenPipeline, load_llamagen, load_llamagen_pipeline

N, K, V = TINY["block_size"], TINY["num_classes"], TINY["vocab_size"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def state():
    return random_official_state_dict(0, **TINY)


@pytest.fixture(scope="module")
def pipe(state):
    return load_llamagen_pipeline(state, device="cpu", **TINY)


SMALL = {**TINY, "block_size": 16}  # a 4×4 grid keeps the sampling loops short


@pytest.fixture(scope="module")
def small():
    return LlamaGenPipeline.from_weights(random_official_state_dict(2, **SMALL), "cpu", **SMALL)


# -- layout -------------------------------------------------------------------------------------


def test_published_sizes_and_parameter_counts():
    for name, (layers, heads, dim, hidden, params) in PUBLISHED.items():
        assert LLAMAGEN_SIZES[name] == {"n_layer": layers, "n_head": heads, "dim": dim}
        assert hidden_width(dim, 256) == hidden
        args = dict(n_layer=layers, n_head=heads, dim=dim)
        assert sum(math.prod(s) for _, s in official_shapes(**args)) == params
    with torch.device("meta"):
        model = GPT(GPTConfig(**LLAMAGEN_SIZES["B"]))
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == official_shapes(
        **LLAMAGEN_SIZES["B"]
    )


@pytest.mark.parametrize("extra", [{}, {"n_kv_head": 2}, {"class_dropout_prob": 0.0}])
def test_tiny_model_has_the_official_keys_shapes_and_order(extra):
    model = GPT(GPTConfig(**TINY, **extra))
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == official_shapes(**TINY, **extra)
    if not extra:
        assert len(got) == 18 and dict(got)["layers.0.feed_forward.w1.weight"] == (192, 64)


# -- loading ------------------------------------------------------------------------------------


def _same_weights(model, state):
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_strict_load_from_every_container(tmp_path, state):
    files = {
        "model.pt": {"model": state, "optimizer": {}, "steps": 3, "args": argparse.Namespace(a=1)},
        "module.pt": {"module": state},
        "state_dict.pt": {"state_dict": state},
        "flat.pt": state,
    }
    tagged = {k: v.clone() for k, v in state.items()}
    tagged["norm.weight"].sharded = False  # pickled with its Python type, as the 3B file is
    files["fsdp.pt"] = tagged
    sources = []
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        sources.append(tmp_path / name)
    save_file(state, str(tmp_path / "w.safetensors"))
    sources += [tmp_path / "w.safetensors", str(tmp_path / "flat.pt"), state, {"model": state}]
    for source in sources:
        model, cfg = load_llamagen(source, device="cpu", **TINY)
        assert not model.training and cfg.dim == 64 and cfg.block_size == N
        assert _same_weights(model, state)
    assert all(v.device.type == "cpu" for v in state.values())  # caller's dict left alone


def test_cache_buffers_and_freqs_cis_are_ignored_but_other_extras_refused(state):
    extra = dict(state)
    for i in range(TINY["n_layer"]):
        extra[f"layers.{i}.attention.kv_cache.k_cache"] = torch.zeros(2, 4, 40, 16)
        extra[f"layers.{i}.attention.kv_cache.v_cache"] = torch.zeros(2, 4, 40, 16)
    extra["freqs_cis"] = torch.zeros(N + 1, 8, 2)
    model, _ = load_llamagen(extra, device="cpu", **TINY)
    assert _same_weights(model, state)
    for key in ("layers.0.attention.bias", "layers.0.attention.kv_cache.x_cache", "freqs_cis.x"):
        with pytest.raises(GenzooError, match="unexpected keys"):
            load_llamagen({**state, key: torch.zeros(1)}, device="cpu", **TINY)


def test_mismatches_are_refused_with_the_shapes_the_file_shows(state):
    missing = {k: v for k, v in state.items() if k != "norm.weight"}
    with pytest.raises(GenzooError, match="missing keys.*norm.weight"):
        load_llamagen(missing, device="cpu", **TINY)
    with pytest.raises(GenzooError, match="mis-shaped") as err:
        load_llamagen(state, device="cpu", **{**TINY, "vocab_size": 32})
    assert "vocab_size=64" in str(err.value)  # what the file says
    with pytest.raises(GenzooError, match="unknown LlamaGen argument.*hidden_size"):
        load_llamagen(state, device="cpu", hidden_size=64)
    with pytest.raises(GenzooError, match="no weights file"):
        load_llamagen("/nonexistent/c2i_B_256.pt", device="cpu")


@pytest.mark.parametrize("kind", sorted(KIND_KEYS))
def test_guess_kind_names_each_official_layout(kind):
    sd = {k: torch.zeros(1) for k in KIND_KEYS[kind].split()}
    assert guess_kind(sd) == kind and kind in KINDS
    assert guess_kind({"model_ema": sd, "epoch": 3}) == kind  # training containers
    uvit_bert = ["embeddings.weight", "pos_embed", "in_blocks.0.attn.qkv.weight", "lm_head.weight"]
    assert guess_kind({k: torch.zeros(1) for k in uvit_bert}) == "maskgit"
    assert guess_kind({"a.weight": torch.zeros(1)}) is None


@pytest.mark.parametrize("kind, says", [("dit", "DiT"), ("var", "VAR"), ("llamagen-vq", "VQ")])
def test_a_file_of_another_kind_is_named(kind, says):
    sd = {k: torch.zeros(2, 2) for k in KIND_KEYS[kind].split()}
    with pytest.raises(GenzooError, match=f"does not hold LlamaGen GPT weights.*{says}"):
        load_llamagen(sd, device="cpu", **TINY)


# -- the forward pass -----------------------------------------------------------------------------


def test_rope_table_and_pairing_follow_the_formula():
    for head_dim, grid in ((16, 6), (100, 3)):  # 100: GPT-3B, 25 frequencies per axis
        cos, sin = rope_2d_table(grid, head_dim, 10000, 1)
        assert cos.shape == (1 + grid * grid, head_dim)
        assert not cos[0].any() and not sin[0].any()  # class token: cos = sin = 0
        for position in (1, 2, grid + 3, grid * grid):
            for pair in range(head_dim // 2):
                theta = rope_angle(position, pair, head_dim, grid, 10000)
                for channel in (2 * pair, 2 * pair + 1):  # one angle for the adjacent pair
                    assert cos[position, channel].item() == pytest.approx(math.cos(theta), abs=1e-6)
                    assert sin[position, channel].item() == pytest.approx(math.sin(theta), abs=1e-6)
    cos, sin = rope_2d_table(6, 16, 10000, 1)
    x = torch.randn(1, 1, 37, 16)
    out = apply_rope(x, cos[None, None], sin[None, None])
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[None, None, :, 0::2], sin[None, None, :, 0::2]
    torch.testing.assert_close(out[..., 0::2], a * c - b * s)
    torch.testing.assert_close(out[..., 1::2], b * c + a * s)


@pytest.mark.parametrize("extra", [{}, {"n_kv_head": 2, "rope_base": 100.0}])
def test_logits_equal_an_independent_float64_recomputation(extra):
    args = {**TINY, **extra}
    sd = random_official_state_dict(1, **args)
    pipe = LlamaGenPipeline.from_weights(sd, device="cpu", **args)
    tokens = torch.randint(0, V, (3, N), generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 7, K])  # K = the null class
    for length in (N, 5, 1):
        got = pipe.model(tokens[:, :length], y)
        assert got.dtype == torch.float32 and got.shape == (3, length, V)
        want = reference_logits(sd, tokens[:, :length], y, **args)
        assert want.abs().max() > 1  # not a trivial comparison
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    # the last input token has no effect
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % V
    torch.testing.assert_close(pipe.model(changed, y), pipe.model(tokens, y))


def test_rope_stays_float32_in_a_bf16_model(state):
    model, _ = load_llamagen(state, device="cpu", **TINY)
    tokens, y = torch.randint(0, V, (2, 8)), torch.tensor([1, 2])
    want = model(tokens, y)
    model.to(torch.bfloat16)
    assert model.rope_tables(torch.device("cpu"))[0].dtype == torch.float32
    got = model(tokens, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0.15 * want.abs().max().item(), rtol=0)


def test_bad_inputs_raise_genzoo_errors(pipe):
    assert pipe.device.type == "cpu" and pipe.config.block_size == N and not pipe.model.training
    tokens = torch.zeros(2, 4, dtype=torch.long)
    y = torch.tensor([1, 2])
    with pytest.raises(GenzooError, match="vocabulary"):
        pipe.model(tokens + V, y)
    with pytest.raises(GenzooError, match="vocabulary"):
        pipe.model(tokens - 1, y)
    with pytest.raises(GenzooError, match="length 37"):
        pipe.model(torch.zeros(2, N + 1, dtype=torch.long), y)
    with pytest.raises(GenzooError, match="outside"):
        pipe.model(tokens, torch.tensor([1, K + 1]))
    for bad, match in [
        ({"top_p": 1.5}, "top_p=1.5"),
        ({"top_k": -1}, "top_k=-1"),
        ({"temperature": 0}, "temperature=0"),
        ({"cfg_interval": 1.5}, "cfg_interval"),
    ]:
        with pytest.raises(GenzooError, match=match):
            pipe.sample_tokens(y, **bad)
    with pytest.raises(GenzooError, match="real class labels"):
        pipe.sample_tokens(torch.tensor([K]), cfg=2.0)


# -- the official sampler -------------------------------------------------------------------------


SETTINGS = [
    dict(cfg=1.0, cfg_interval=-1, temperature=1.0, top_k=0, top_p=1.0),
    dict(cfg=2.0, cfg_interval=-1, temperature=1.0, top_k=0, top_p=1.0),
    dict(cfg=1.75, cfg_interval=3, temperature=0.8, top_k=20, top_p=0.9),
]


@pytest.mark.parametrize("options", SETTINGS)
def test_seeded_global_rng_reproduces_the_official_loop(small, options):
    y = torch.tensor([3, 0, 9])
    torch.manual_seed(123)
    got = small.sample_tokens(y, **options)
    torch.manual_seed(123)
    want = reference_sample(small.model, y, null=K, n_tokens=16, **options)
    assert got.shape == (3, 16) and torch.equal(got, want)


def test_top_k_1_is_greedy(small):
    y = torch.tensor([4, 5])
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        runs.append(small.sample_tokens(y, cfg=1.5, top_k=1))
    assert torch.equal(runs[0], runs[1])
    seq = torch.zeros(2, 0, dtype=torch.long)
    labels = torch.cat([y, torch.full_like(y, K)])
    with torch.no_grad():
        for _ in range(16):
            inputs = torch.cat([seq, torch.zeros(2, 1, dtype=torch.long)], dim=1)
            out = small.model(torch.cat([inputs, inputs]), labels)[:, -1]
            guided = out[2:] + (out[:2] - out[2:]) * 1.5
            seq = torch.cat([seq, guided.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(runs[0], seq)


def test_per_sample_generators_make_samples_independent_of_the_batch(small):
    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = small.sample_tokens([1, 2, 3], cfg=2.0, top_k=30, generator=gens(10, 11, 12))
    alone = small.sample_tokens([2], cfg=2.0, top_k=30, generator=gens(11))
    other = small.sample_tokens([7, 2], cfg=2.0, top_k=30, generator=gens(99, 11))
    assert torch.equal(batch[1], alone[0]) and torch.equal(batch[1], other[1])
    assert not torch.equal(batch[0], batch[2])
    with pytest.raises(GenzooError, match="2 generators for a batch of 3"):
        small.sample_tokens([1, 2, 3], generator=gens(1, 2))


# -- the `ar` family ------------------------------------------------------------------------------

TRAIN = dict(
    dim=32, n_layer=2, n_head=2, multiple_of=16, vocab_size=16, block_size=16, num_classes=3,
    token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0,
)  # fmt: skip


def _train(order: str, steps: int) -> list[float]:
    torch.manual_seed(0)
    net = GPT(GPTConfig(**TRAIN))
    net.drop_labels_in_forward = False
    family = Autoregressive(ARConfig(order=order))
    g = torch.Generator().manual_seed(1)
    z = torch.randint(0, 16, (8, 4, 4), generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        out = family.loss(net, z, y, generator=g, step=step, total_steps=steps)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
        assert 0 <= out["acc"].item() <= 1
    return losses


def test_ar_family_training_lowers_the_loss():
    losses = _train("raster", 15)
    assert losses[0] == pytest.approx(math.log(16), abs=1e-4)  # zero-initialised output layer
    assert losses[-1] < 0.7 * losses[0]
    random = _train("random", 6)
    assert all(math.isfinite(v) for v in random) and random[-1] < random[0]


def test_random_order_permutes_tokens_and_passes_the_orders():
    seen = {}

    class Spy(torch.nn.Module):
        def forward(self, tokens, y, orders=None):
            seen.update(tokens=tokens, orders=orders)
            return torch.zeros(*tokens.shape, 16, requires_grad=True)

    z = torch.arange(16).repeat(3, 1).reshape(3, 4, 4)
    family = Autoregressive(ARConfig(order="random"))
    family.loss(Spy(), z, torch.zeros(3, dtype=torch.long), generator=torch.Generator())
    orders = seen["orders"]
    assert torch.equal(orders.sort(dim=1).values, torch.arange(16).expand(3, 16))
    assert torch.equal(seen["tokens"], orders)  # token n of z is n: permuted tokens = orders
    Autoregressive(ARConfig()).loss(Spy(), z, torch.zeros(3, dtype=torch.long), generator=None)
    assert seen["orders"] is None
    anneal = ARConfig(order="random", anneal_start=0.5, anneal_end=0.75)
    probs = [random_order_probability(anneal, s, 100) for s in (0, 49, 50, 60, 75, 99)]
    assert probs == pytest.approx([1, 1, 1, 0.6, 0, 0])
    assert random_order_probability(ARConfig(), 10, 100) == 0
    with pytest.raises(GenzooError, match="anneal_start"):
        Autoregressive(ARConfig(order="random", anneal_start=0.8, anneal_end=0.2))


def test_ar_family_sampling_and_its_options(small):
    family = Autoregressive(ARConfig())
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    ids = family.sample(small.model, torch.tensor([1, 2]), generators=gens, null_label=K, cfg=2.0)
    assert ids.shape == (2, 4, 4) and ids.dtype == torch.long
    again = small.sample_tokens(
        [1, 2], cfg=2.0, generator=[torch.Generator().manual_seed(s) for s in (5, 6)]
    )
    assert torch.equal(ids.reshape(2, 16), again)
    typed = family.check_sample_options({"top_k": "5", "cfg": "2.5", "cfg_interval": "3"})
    assert (typed["top_k"], typed["cfg"], typed["cfg_interval"], typed["top_p"]) == (5, 2.5, 3, 1.0)
    with pytest.raises(GenzooError, match="'topk'.*top_k"):
        family.sample(small.model, torch.tensor([1]), generators=None, null_label=K, topk=3)
    with pytest.raises(GenzooError, match="cfg_schedule"):
        family.sample(
            small.model, torch.tensor([1]), generators=None, null_label=K, cfg_schedule="x"
        )
    with pytest.raises(GenzooError, match="null"):
        family.sample(small.model, torch.tensor([1]), generators=None, null_label=None, cfg=3.0)


def test_resolve_fills_the_sizes_from_the_tokenizer_and_data():
    class Codebook:
        spec, vocab_size = "vq:test", 64

        def latent_shape(self, res):
            return (res // 16, res // 16)

    cfg = GPTConfig(**LLAMAGEN_SIZES["B"])
    GPT.resolve(cfg, res=96, tokenizer=Codebook(), num_classes=7, family=None)
    assert (cfg.vocab_size, cfg.block_size, cfg.num_classes) == (64, 36, 7)
    Codebook.vocab_size = None
    with pytest.raises(GenzooError, match="discrete"):
        GPT.resolve(cfg, res=96, tokenizer=Codebook(), num_classes=7, family=None)
