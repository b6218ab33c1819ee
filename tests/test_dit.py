"""genzoo's DiT against an independent plain-torch reference of the official forward pass."""

from __future__ import annotations

import math

import pytest
import torch
from official_layout import official_args, official_shapes, random_official_state_dict, sincos_table

from genzoo.backbones import DiT, DiTConfig, build_backbone
from genzoo.errors import GenzooError

# -- an independent reference of the official DiT forward, straight from a state dict ---------


def _linear(x: torch.Tensor, sd: dict, name: str) -> torch.Tensor:
    return x @ sd[name + ".weight"].T + sd[name + ".bias"]


def _layer_norm(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1 + torch.exp(-x))


def reference_forward(state: dict, a: dict, x, t, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Official DiT in float64: returns (output image, final-linear token features)."""
    sd = {k: v.double() for k, v in state.items()}
    x = x.double()
    N, C, S, _ = x.shape
    p, D, H = a["patch_size"], a["hidden_size"], a["num_heads"]
    G, hd = S // p, D // H
    C_out = 2 * C if a["learn_sigma"] else C

    # patch embedding: token gi·G+gj = W · patch(gi, gj) + b, patch flattened as (c, a, b)
    patches = torch.stack(
        [
            x[:, :, gi * p : (gi + 1) * p, gj * p : (gj + 1) * p].reshape(N, -1)
            for gi in range(G)
            for gj in range(G)
        ],
        dim=1,
    )
    w = sd["x_embedder.proj.weight"].reshape(D, -1)
    h = patches @ w.T + sd["x_embedder.proj.bias"]
    h = h + torch.from_numpy(sincos_table(D, G))[None]

    # timestep: freqs in float32 (as specified), then [cos, sin]
    freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
    args = t.float()[:, None] * freqs[None]
    t_freq = torch.cat([torch.cos(args), torch.sin(args)], -1).double()
    t_emb = _linear(_silu(_linear(t_freq, sd, "t_embedder.mlp.0")), sd, "t_embedder.mlp.2")
    c = t_emb + sd["y_embedder.embedding_table.weight"][y]

    for i in range(a["depth"]):
        b = f"blocks.{i}."
        mod = _linear(_silu(c), sd, b + "adaLN_modulation.1")
        sh1, sc1, g1, sh2, sc2, g2 = (
            mod[:, j * D : (j + 1) * D, None].transpose(1, 2) for j in range(6)
        )
        z = _layer_norm(h) * (1 + sc1) + sh1
        qkv = _linear(z, sd, b + "attn.qkv")
        heads = []
        for hh in range(H):
            q = qkv[..., hh * hd : (hh + 1) * hd]
            k = qkv[..., D + hh * hd : D + (hh + 1) * hd]
            v = qkv[..., 2 * D + hh * hd : 2 * D + (hh + 1) * hd]
            scores = torch.einsum("ntd,nsd->nts", q, k) * hd**-0.5
            heads.append(torch.einsum("nts,nsd->ntd", torch.softmax(scores, -1), v))
        h = h + g1 * _linear(torch.cat(heads, -1), sd, b + "attn.proj")
        z = _layer_norm(h) * (1 + sc2) + sh2
        h = h + g2 * _linear(_gelu_tanh(_linear(z, sd, b + "mlp.fc1")), sd, b + "mlp.fc2")

    mod = _linear(_silu(c), sd, "final_layer.adaLN_modulation.1")
    shift, scale = mod[:, None, :D], mod[:, None, D:]
    feats = _linear(_layer_norm(h) * (1 + scale) + shift, sd, "final_layer.linear")

    out = torch.empty(N, C_out, S, S, dtype=torch.float64)
    for gi in range(G):
        for gj in range(G):
            for ra in range(p):
                for cb in range(p):
                    for ch in range(C_out):
                        out[:, ch, gi * p + ra, gj * p + cb] = feats[
                            :, gi * G + gj, (ra * p + cb) * C_out + ch
                        ]
    return out, feats


def _load(args: dict, seed: int = 0) -> tuple[DiT, dict]:
    state = random_official_state_dict(seed, **args)
    model = DiT(DiTConfig(**args))
    model.load_state_dict(state, strict=True)
    return model.eval(), state


SMALL = dict(input_size=8, hidden_size=32, depth=2, num_heads=4, num_classes=10)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(patch_size=2),
        dict(patch_size=4, learn_sigma=False, in_channels=3),
        dict(patch_size=2, class_dropout_prob=0.0, mlp_ratio=2.0),
    ],
)
def test_forward_matches_official_reference(overrides):
    args = official_args(**{**SMALL, **overrides})
    model, state = _load(args)
    torch.manual_seed(1)
    x = torch.randn(3, args["in_channels"], 8, 8)
    t = torch.tensor([0, 417, 999])
    y = torch.tensor([0, 9, 3])
    with torch.no_grad():
        out = model(x, t, y)
    expected, _ = reference_forward(state, args, x, t, y)
    c_out = args["in_channels"] * (2 if args["learn_sigma"] else 1)
    assert out.shape == (3, c_out, 8, 8) and out.dtype == torch.float32
    assert expected.abs().max() > 0.1  # a non-trivial output
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)
    # continuous SiT times go through the same embedding
    tf = torch.tensor([0.0, 0.5, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(
            model(x, tf, y).double(), reference_forward(state, args, x, tf, y)[0], atol=1e-5, rtol=0
        )


def test_unpatchify_pixel_formula_p4():
    args = official_args(**SMALL, patch_size=4)
    model, _ = _load(args, seed=5)
    feats = {}
    model.final_layer.register_forward_hook(lambda m, i, o: feats.setdefault("tok", o))
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        out = model(x, torch.tensor([3, 7]), torch.tensor([1, 2]))
    G, p, C_out = 2, 4, 8
    tok = feats["tok"]
    for c, gi, a, gj, b in [(5, 1, 2, 0, 3), (0, 0, 0, 1, 1), (7, 1, 3, 1, 3)]:
        assert out[1, c, gi * p + a, gj * p + b] == tok[1, gi * G + gj, (a * p + b) * C_out + c]


def test_position_table_in_model_is_the_formula_and_fixed():
    args = official_args(**SMALL)
    model = DiT(DiTConfig(**args))
    expected = torch.from_numpy(sincos_table(32, 4)).float()[None]
    assert torch.equal(model.pos_embed.data, expected)
    assert not model.pos_embed.requires_grad
    assert any(p is model.pos_embed for p in model.parameters())
    assert "pos_embed" in model.state_dict() and "pos_embed" not in dict(model.named_buffers())


def test_state_dict_keys_order_and_shapes_follow_the_official_table():
    args = official_args("XL/2")
    with torch.device("meta"):
        model = DiT(DiTConfig(**args))
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == official_shapes(**args)
    assert len(got) == 12 + 10 * 28


def test_official_initialisation():
    torch.manual_seed(0)
    model = DiT(DiTConfig(input_size=8, hidden_size=64, depth=2, num_heads=4, num_classes=10))
    for block in model.blocks:
        assert torch.count_nonzero(block.adaLN_modulation[1].weight) == 0
        assert torch.count_nonzero(block.adaLN_modulation[1].bias) == 0
        bound = math.sqrt(6 / (64 + 192))  # xavier-uniform of qkv (fan_in 64, fan_out 192)
        w = block.attn.qkv.weight
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
        assert torch.count_nonzero(block.attn.qkv.bias) == 0
    for layer in (model.final_layer.linear, model.final_layer.adaLN_modulation[1]):
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    conv = model.x_embedder.proj.weight  # like a linear with fan_in C·p·p = 16, fan_out 64
    assert conv.abs().max() <= math.sqrt(6 / (16 + 64))
    assert abs(model.y_embedder.embedding_table.weight.std().item() - 0.02) < 0.004
    assert abs(model.t_embedder.mlp[0].weight.std().item() - 0.02) < 0.002
    # zero final layer: the untrained network predicts zeros
    out = model.eval()(torch.randn(2, 4, 8, 8), torch.tensor([1, 2]), torch.tensor([3, 4]))
    assert torch.count_nonzero(out) == 0


def test_label_dropout_only_in_training_mode():
    args = official_args(**SMALL, class_dropout_prob=0.5)
    model, _ = _load(args)
    x, t = torch.randn(8, 4, 8, 8), torch.full((8,), 100)
    y = torch.arange(8)
    null = torch.full((8,), 10)
    with torch.no_grad():
        eval_out = model(x, t, y)
        null_out = model(x, t, null)
        model.train()
        torch.manual_seed(7)
        train_out = model(x, t, y)
    torch.manual_seed(7)
    dropped = torch.rand(8) < 0.5
    assert 0 < dropped.sum() < 8
    torch.testing.assert_close(train_out[dropped], null_out[dropped])
    torch.testing.assert_close(train_out[~dropped], eval_out[~dropped])
    assert model.null_label == 10
    assert DiT(DiTConfig(**{**args, "class_dropout_prob": 0.0})).null_label is None


def test_cond_transform_sees_the_summed_condition():
    args = official_args(**SMALL)
    model, state = _load(args)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([5, 600]), torch.tensor([1, 2])
    table = state["y_embedder.embedding_table.weight"]
    seen = []

    def to_null(c):
        seen.append(c.clone())
        return c - table[y] + table[10]  # swap the class part for the null class

    with torch.no_grad():
        out = model(x, t, y, cond_transform=to_null)
        torch.testing.assert_close(out, model(x, t, torch.tensor([10, 10])))
        t_emb = model.t_embedder(t)
        assert model(x, t, y, cond_transform=lambda c: c).equal(model(x, t, y))
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], t_emb + table[y])


# -- switches -----------------------------------------------------------------------------------

TINY = dict(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2, num_classes=10)
SWITCHES = {
    "tdln": dict(time_cond="tdln"),
    "rmsnorm": dict(norm="rmsnorm"),
    "swiglu": dict(mlp="swiglu"),
    "rope": dict(pos="rope"),
    "qk_norm": dict(qk_norm=True),
}


def _randomised(cfg: DiTConfig, seed: int) -> DiT:
    torch.manual_seed(seed)
    model = DiT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    return model.eval()


def _keys(cfg: DiTConfig) -> set[str]:
    return set(DiT(cfg).state_dict())


@pytest.mark.parametrize("name", list(SWITCHES))
def test_switch_runs_trains_and_changes_outputs(name):
    base_cfg, cfg = DiTConfig(**TINY), DiTConfig(**TINY, **SWITCHES[name])
    base = _randomised(base_cfg, 0)
    model = _randomised(cfg, 1)
    # share every tensor the two layouts have in common, so only the switch differs
    shared = {
        k: v
        for k, v in base.state_dict().items()
        if k in model.state_dict() and model.state_dict()[k].shape == v.shape
    }
    model.load_state_dict(shared, strict=False)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([0.2, 0.9]), torch.tensor([1, 2])
    with torch.no_grad():
        assert not torch.allclose(model(x, t, y), base(x, t, y), atol=1e-3)
        # the network still depends on time
        assert not torch.allclose(model(x, t, y), model(x, t + 0.5, y), atol=1e-4)
    model.train()
    model(x, t, y).square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_each_switch_changes_only_its_own_parameters():
    base = _keys(DiTConfig(**TINY))
    d, heads = 32, 2
    shapes = {n: dict(DiT(DiTConfig(**TINY, **kw)).state_dict()) for n, kw in SWITCHES.items()}

    rope = set(shapes["rope"])
    assert rope == base - {"pos_embed"}

    qk = set(shapes["qk_norm"])
    assert qk - base == {f"blocks.{i}.attn.{n}_norm.weight" for i in range(2) for n in "qk"}
    assert base <= qk
    assert shapes["qk_norm"]["blocks.0.attn.q_norm.weight"].shape == (d // heads,)

    rms = set(shapes["rmsnorm"])
    added = {f"blocks.{i}.norm{j}.weight" for i in range(2) for j in (1, 2)} | {
        "final_layer.norm_final.weight"
    }
    assert rms - base == added and base <= rms

    swiglu = set(shapes["swiglu"])
    hidden = int(2 / 3 * int(d * 4.0))
    block_mlp = {k for k in base if k.startswith("blocks.") and ".mlp." in k}
    assert base - swiglu == block_mlp
    assert all(k.startswith("blocks.") and ".mlp." in k for k in swiglu - base)
    assert shapes["swiglu"]["blocks.1.mlp.w12.weight"].shape == (2 * hidden, d)
    assert shapes["swiglu"]["blocks.1.mlp.w3.weight"].shape == (d, hidden)

    tdln = set(shapes["tdln"])
    removed = base - tdln
    assert removed == {k for k in base if k.startswith("t_embedder.") or "adaLN_modulation" in k}
    assert all(".gamma." in k or ".beta." in k for k in tdln - base)
    assert "blocks.0.norm1.gamma.p1" in tdln and "final_layer.norm_final.beta.w" in tdln


def test_tdln_time_scale_and_class_token():
    cfg = DiTConfig(**TINY, time_cond="tdln", tdln_time_scale=0.001)
    model = _randomised(cfg, 2)
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    scaled = DiTConfig(**TINY, time_cond="tdln", tdln_time_scale=1.0)
    other = DiT(scaled).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        # index 500 under scale 1/1000 is the same time as 0.5 under scale 1
        torch.testing.assert_close(
            model(x, torch.tensor([500, 500]), y), other(x, torch.tensor([0.5, 0.5]), y)
        )
        # the class reaches the output (through the in-context token)
        assert not torch.allclose(
            model(x, torch.tensor([1, 1]), y), model(x, torch.tensor([1, 1]), y.flip(0))
        )


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(input_size=30, patch_size=4), r"input_size=30.*patch_size=4"),
        (dict(hidden_size=30, num_heads=4), r"hidden_size=30.*num_heads=4"),
        (dict(time_cond="film"), r"time_cond='film'.*adaln, tdln"),
        (dict(norm="batchnorm"), r"norm='batchnorm'"),
        (dict(mlp="relu"), r"mlp='relu'"),
        (dict(pos="learned"), r"pos='learned'"),
        (dict(pos="rope", hidden_size=36, num_heads=6), r"head dimension divisible by 4"),
        (dict(class_dropout_prob=1.0), r"class_dropout_prob"),
    ],
)
def test_build_backbone_rejects_bad_configs(overrides, match):
    with pytest.raises(GenzooError, match=match):
        build_backbone(DiTConfig(**{**TINY, **overrides}))


def test_build_backbone_builds_a_dit():
    model = build_backbone(DiTConfig(**TINY))
    assert isinstance(model, DiT)
    out = model(torch.randn(1, 4, 8, 8), torch.tensor(3), torch.tensor([0]))  # 0-d t broadcasts
    assert out.shape == (1, 8, 8, 8)


@pytest.mark.gpu
def test_cuda_forward_matches_cpu():
    args = official_args(**SMALL)
    model, _ = _load(args)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 900]), torch.tensor([1, 2])
    with torch.no_grad():
        cpu = model(x, t, y)
        gpu = model.cuda()(x.cuda(), t.cuda(), y.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)  # TF32 may be on
