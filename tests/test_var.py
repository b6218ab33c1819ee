"""VAR: official layout and loading, the forward pass against the spec, KV-cached next-scale
sampling against an uncached re-enactment of the official sampler (global-RNG draw order);
the references are in var_layout.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from var_layout import (
    TINY_PATCH_NUMS,
    element_count,
    random_var_state,
    random_vqvae_state,
    reenact_var_sampler,
    reference_var_logits,
    token_levels,
    var_layout,
    vqvae_layout,
)

from genzoo.backbones.var import VAR, VARConfig, var_preset
from genzoo.errors import GenzooError
from genzoo.families.next_scale import NextScale, NextScaleConfig
from genzoo.zoo.var import load_var, load_var_vqvae

N_CLASSES, V, CV, C, HEADS, DEPTH = 10, 64, 8, 64, 2, 2
TINY = dict(depth=DEPTH, width=C, heads=HEADS, vocab=V, cv=CV, patch_nums=TINY_PATCH_NUMS,
            classes=N_CLASSES)  # fmt: skip
BEGIN_END = [(0, 1), (1, 5), (5, 14), (14, 30)]


@pytest.fixture(scope="module")
def vae_state():
    return random_vqvae_state(vqvae_layout(ch=32, z=CV, vocab=V, scales=4), seed=0)


@pytest.fixture(scope="module")
def tokenizer(vae_state):
    return load_var_vqvae(vae_state, v_patch_nums=TINY_PATCH_NUMS, device="cpu")


@pytest.fixture(scope="module")
def var_state():
    return random_var_state(var_layout(**TINY), TINY_PATCH_NUMS, seed=1)


@pytest.fixture(scope="module")
def pipe(var_state, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("var") / "var_tiny.pth"
    torch.save(var_state, path)
    return load_var(path, tokenizer, device="cpu")


def random_ids(batch: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (batch, p * p), generator=g) for p in TINY_PATCH_NUMS]


def reference_logits(s, y, x_in, l2=True, shared=False):
    return reference_var_logits(s, y, x_in, TINY_PATCH_NUMS, HEADS, l2=l2, shared=shared)


def reenact_official_sampler(s, vae, y, cfg, top_k, top_p, more_smooth):
    return reenact_var_sampler(s, vae, y, TINY_PATCH_NUMS, HEADS, cfg, top_k, top_p, more_smooth)


# -- layout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [{}, {"shared_aln": True}, {"l2_norm": False}])
def test_var_has_the_official_keys_shapes_and_order(variant):
    cfg = VARConfig(depth=DEPTH, embed_dim=C, num_heads=HEADS, num_classes=N_CLASSES,
                    vocab_size=V, z_channels=CV, patch_nums=TINY_PATCH_NUMS,
                    shared_aln=variant.get("shared_aln", False),
                    attn_l2_norm=variant.get("l2_norm", True))  # fmt: skip
    model = VAR(cfg)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == var_layout(
        **TINY, **variant
    )
    levels = token_levels(TINY_PATCH_NUMS)
    assert torch.equal(model.lvl_1L[0], levels)
    mask = model.attn_bias_for_masking[0, 0]
    assert torch.equal(mask == 0, levels[:, None] >= levels[None, :])
    assert torch.isinf(mask[mask != 0]).all()


@pytest.mark.parametrize(
    "name, keys, params",
    [
        ("d16", 220, 310_283_520),
        ("d20", 272, 600_917_136),
        ("d24", 324, 1_033_399_360),
        ("d30", 402, 2_010_020_356),
        ("d36", 446, 2_353_893_904),
    ],
)
def test_presets_follow_the_depth_rule_and_published_counts(name, keys, params):
    depth = int(name[1:])
    d36 = dict(shared_aln=True, patch_nums=(1, 2, 3, 4, 6, 9, 13, 18, 24, 32))
    layout = var_layout(depth=depth, **(d36 if depth == 36 else {}))
    assert (len(layout), element_count(layout)) == (keys, params)
    with torch.device("meta"):
        model = VAR(var_preset(name))
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == layout
    assert (model.cfg.width, model.cfg.heads) == (64 * depth, depth)


# -- loading and the forward pass -------------------------------------------------------------


def test_strict_load_and_forward_equal_the_spec(pipe, var_state, tokenizer, tmp_path):
    for k, v in pipe.var.state_dict().items():
        assert torch.equal(v, var_state[k]), k
    cfg = pipe.config
    assert (cfg.depth, cfg.width, cfg.heads, cfg.num_classes) == (DEPTH, C, HEADS, N_CLASSES)
    ids, y = random_ids(3, seed=5), torch.tensor([0, 7, N_CLASSES])
    x_in = tokenizer.var_input(ids)
    expected = reference_logits(var_state, y, x_in)
    torch.testing.assert_close(pipe.var(y, x_in), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pipe.model(torch.cat(ids, 1), y), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pipe.model(y, x_in), expected, atol=1e-5, rtol=1e-5)
    st = tmp_path / "var.safetensors"
    save_file(var_state, str(st))
    torch.testing.assert_close(load_var(st, tokenizer, device="cpu").model(ids, y), expected,
                               atol=1e-5, rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("variant", [{"shared_aln": True}, {"l2_norm": False}])
def test_shared_adaln_and_plain_attention_variants(variant, tokenizer):
    state = random_var_state(var_layout(**TINY, **variant), TINY_PATCH_NUMS, seed=2)
    pipe = load_var(state, tokenizer, device="cpu", num_heads=HEADS)
    assert pipe.config.shared_aln == variant.get("shared_aln", False)
    ids, y = random_ids(2, seed=6), torch.tensor([1, 2])
    l2, shared = variant.get("l2_norm", True), "shared_aln" in variant
    expected = reference_logits(state, y, tokenizer.var_input(ids), l2=l2, shared=shared)
    torch.testing.assert_close(pipe.model(ids, y), expected, atol=1e-5, rtol=1e-5)


def test_label_dropout_only_in_training_mode(pipe, var_state, tokenizer):
    ids, y = random_ids(8, seed=7), torch.arange(8)
    x_in = tokenizer.var_input(ids)
    torch.manual_seed(0)
    eval_logits = pipe.var(y, x_in)  # eval: nothing drawn, no label dropped
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)
    torch.testing.assert_close(
        eval_logits, reference_logits(var_state, y, x_in), atol=1e-5, rtol=1e-5
    )
    pipe.var.train()
    try:
        torch.manual_seed(3)
        train_logits = pipe.var(y, x_in)
        torch.manual_seed(3)  # the official draw: one torch.rand(B) per forward
        dropped = torch.where(torch.rand(8) < 0.1, N_CLASSES, y)
    finally:
        pipe.var.eval()
    torch.testing.assert_close(train_logits, reference_logits(var_state, dropped, x_in),
                               atol=1e-5, rtol=1e-5)  # fmt: skip


def test_block_causal_mask(pipe, tokenizer):
    """Logits of scale k do not depend on the inputs of later scales (and do on earlier ones)."""
    y = torch.tensor([3, 4])
    x_in = tokenizer.var_input(random_ids(2, seed=8))
    base = pipe.var(y, x_in)
    for k, (_, end) in enumerate(BEGIN_END[:-1]):
        changed = x_in.clone()
        changed[:, end - 1 :] += torch.randn_like(changed[:, end - 1 :])
        out = pipe.var(y, changed)
        torch.testing.assert_close(out[:, :end], base[:, :end], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(out[:, end:], base[:, end:], atol=1e-4), k


def test_kv_cached_decoding_equals_teacher_forcing(pipe, tokenizer):
    ids, y = random_ids(2, seed=9), torch.tensor([5, N_CLASSES])
    x_in = tokenizer.var_input(ids)
    full = pipe.var(y, x_in)
    pipe.var.setup_cache(2)
    try:
        for k, (begin, end) in enumerate(BEGIN_END):
            piece = None if k == 0 else x_in[:, begin - 1 : end - 1]
            torch.testing.assert_close(pipe.var.decode(piece, y, k), full[:, begin:end],
                                       atol=1e-5, rtol=1e-5)  # fmt: skip
    finally:
        pipe.var.clear_cache()


# -- sampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg, top_k, top_p, more_smooth",
    [(1.5, 0, 0.0, False), (4.0, 20, 0.9, False), (2.0, 12, 0.0, True)],
)
def test_sampling_reproduces_the_official_global_rng_draw_order(
    pipe, var_state, vae_state, cfg, top_k, top_p, more_smooth
):
    y = torch.tensor([2, 9])
    torch.manual_seed(123)
    ids = pipe.sample_tokens(y, cfg=cfg, top_k=top_k, top_p=top_p, more_smooth=more_smooth)
    after = torch.rand(1)
    torch.manual_seed(123)
    expected, _ = reenact_official_sampler(var_state, vae_state, y, cfg, top_k, top_p, more_smooth)
    assert ids.shape == (2, 30) and ids.dtype == torch.int64
    assert torch.equal(ids, expected)
    assert torch.equal(torch.rand(1), after)  # the same number of draws


@pytest.mark.parametrize("more_smooth", [False, True])
def test_sampled_images_decode_what_was_fed_forward(pipe, var_state, vae_state, more_smooth):
    y = torch.tensor([4])
    torch.manual_seed(5)
    images = pipe.sample(y, cfg=2.0, top_k=16, more_smooth=more_smooth)
    assert images.shape == (1, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    torch.manual_seed(5)
    ids, f_hat = reenact_official_sampler(var_state, vae_state, y, 2.0, 16, 0.0, more_smooth)
    if more_smooth:  # the soft codes, not the ids, build the image
        reference = (pipe.tokenizer.fhat_to_img(f_hat) + 1) / 2
        torch.testing.assert_close(images, reference, atol=1e-4, rtol=1e-4)
    else:  # the image is the decoded ids
        torch.testing.assert_close(images, (pipe.tokenizer.decode(ids) + 1) / 2)


def test_a_seeded_generator_equals_the_seeded_global_rng_on_cpu(pipe):
    y = torch.tensor([1, 1, 6])
    ids = pipe.sample_tokens(y, top_k=30, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(7)
    assert torch.equal(ids, pipe.sample_tokens(y, top_k=30))


def test_label_rules_and_greedy_decoding(pipe):
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    drawn = pipe.sample_tokens(None, batch_size=3, generator=g1)
    labels = torch.multinomial(torch.full((1, N_CLASSES), 1 / N_CLASSES), 3, True, generator=g2)
    assert torch.equal(drawn, pipe.sample_tokens(labels.view(3), generator=g2))
    torch.manual_seed(0)
    null = pipe.sample_tokens(-1, batch_size=2)
    torch.manual_seed(0)
    assert torch.equal(null, pipe.sample_tokens(torch.full((2,), N_CLASSES)))
    greedy = [pipe.sample_tokens([3], top_k=1, generator=torch.Generator().manual_seed(s))
              for s in (0, 1)]  # fmt: skip
    assert torch.equal(*greedy)


def test_per_sample_generators_make_samples_independent_of_the_batch(pipe, tokenizer):
    family = NextScale(NextScaleConfig(), tokenizer)
    gens = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    both = family.sample(pipe.var, torch.tensor([0, 8]), generators=gens([10, 11]),
                         null_label=N_CLASSES, top_k=25)  # fmt: skip
    alone = family.sample(pipe.var, torch.tensor([8]), generators=gens([11]),
                          null_label=N_CLASSES, top_k=25)  # fmt: skip
    assert [tuple(t.shape) for t in both] == [(2, p * p) for p in TINY_PATCH_NUMS]
    assert all(torch.equal(a[1:], b) for a, b in zip(both, alone))
    assert pipe.var.blocks[0].attn.kv_cache is None  # the cache is released


# -- training -----------------------------------------------------------------------------------


def test_loss_weights_every_token_by_one_over_l(tokenizer):
    cfg = VARConfig(depth=DEPTH, embed_dim=C, num_heads=HEADS, num_classes=N_CLASSES,
                    vocab_size=V, z_channels=CV, patch_nums=TINY_PATCH_NUMS)  # fmt: skip
    net = VAR(cfg)
    net.drop_labels_in_forward = False  # genzoo's trainer drops labels itself
    family = NextScale.from_config(NextScaleConfig(), tokenizer=tokenizer)
    ids, y = random_ids(4, seed=12), torch.tensor([0, 1, 2, N_CLASSES])
    out = family.loss(net, ids, y, generator=None)
    logits = net(y, tokenizer.var_input(ids))
    ce = F.cross_entropy(logits.reshape(-1, V), torch.cat(ids, 1).reshape(-1), reduction="none")
    ce = ce.view(4, 30)
    torch.testing.assert_close(out["loss"], ce.mean())
    per_scale = sum((e - b) / 30 * ce[:, b:e].mean() for b, e in BEGIN_END)
    torch.testing.assert_close(out["loss"], per_scale)
    torch.testing.assert_close(out["loss_last"], ce[:, 14:].mean())
    out["loss"].backward()
    assert net.head.weight.grad is not None and net.word_embed.weight.grad.abs().sum() > 0
    smooth = NextScale(NextScaleConfig(label_smooth=0.1), tokenizer).loss(net, ids, y)
    target = torch.cat(ids, 1).reshape(-1)
    expected = F.cross_entropy(logits.reshape(-1, V), target, label_smoothing=0.1)
    torch.testing.assert_close(smooth["loss"], expected)


def test_resolve_takes_sizes_from_the_tokenizer(tokenizer):
    cfg = VARConfig(depth=2)
    VAR.resolve(cfg, res=64, tokenizer=tokenizer, num_classes=5, family=None)
    assert (cfg.patch_nums, cfg.vocab_size, cfg.z_channels, cfg.num_classes) == (
        TINY_PATCH_NUMS,
        V,
        CV,
        5,
    )
    with pytest.raises(GenzooError, match="64"):
        VAR.resolve(cfg, res=32, tokenizer=tokenizer, num_classes=5, family=None)


# -- errors -------------------------------------------------------------------------------------


def test_bad_inputs_raise_genzoo_errors(pipe, var_state, tokenizer):
    with pytest.raises(GenzooError, match="blocks.2"):
        load_var(var_state, tokenizer, device="cpu", depth=3)
    with pytest.raises(GenzooError, match="unknown official VAR argument"):
        load_var(var_state, tokenizer, device="cpu", detph=2)
    other_state = random_vqvae_state(vqvae_layout(ch=32, z=CV, vocab=V, scales=3))
    other = load_var_vqvae(other_state, v_patch_nums=(1, 2, 4), device="cpu")
    with pytest.raises(GenzooError, match="pos_1LC"):
        load_var(var_state, other, device="cpu")
    plain = random_var_state(var_layout(**TINY, l2_norm=False), TINY_PATCH_NUMS)
    with pytest.raises(GenzooError, match="num_heads"):
        load_var(plain, tokenizer, device="cpu")
    ids = random_ids(1, seed=0)
    with pytest.raises(GenzooError, match=r"\[0, 10\]"):
        pipe.model(ids, torch.tensor([11]))
    with pytest.raises(GenzooError, match="teacher-forcing input"):
        pipe.var(torch.tensor([1]), torch.zeros(1, 28, CV))
    with pytest.raises(GenzooError, match="setup_cache"):
        pipe.var.decode(None, torch.tensor([1]), 0)
    with pytest.raises(GenzooError, match="batch_size"):
        pipe.sample_tokens(None)
    with pytest.raises(GenzooError, match="top_p"):
        pipe.sample_tokens([1], top_p=1.5)
    with pytest.raises(GenzooError, match="tokenizer"):
        NextScale().loss(pipe.var, ids, torch.tensor([1]))
    with pytest.raises(GenzooError, match="divisible"):
        VAR(VARConfig(depth=2, embed_dim=66, num_heads=4))
    with pytest.raises(GenzooError, match="multi-scale VQVAE"):  # the two files swapped
        load_var(other_state, var_state, device="cpu")
