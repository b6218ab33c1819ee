"""Building blocks in genzoo.nn checked against their formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from official_layout import sincos_table

from genzoo.nn import (
    Attention,
    AxialRoPE,
    LabelEmbedder,
    RMSNorm,
    SwiGLU,
    TimeDependentNorm,
    make_mlp,
    sincos_pos_embed_2d,
    timestep_embedding,
)


def test_timestep_embedding_is_cos_then_sin_of_float32_frequencies():
    t = torch.tensor([0, 1, 17, 999])
    emb = timestep_embedding(t, 256)
    freqs = np.exp(-math.log(10000) * np.arange(128) / 128)
    args = t.numpy()[:, None] * freqs[None]
    expected = np.concatenate([np.cos(args), np.sin(args)], axis=1)
    assert emb.shape == (4, 256) and emb.dtype == torch.float32
    np.testing.assert_allclose(emb.numpy(), expected, atol=2e-4)  # float32 args up to 999
    assert torch.equal(emb[0, :128], torch.ones(128))  # t=0: cos part first
    # fractional (SiT) times go in unscaled
    frac = timestep_embedding(torch.tensor([0.25]), 256)
    np.testing.assert_allclose(frac[0, 128:].numpy(), np.sin(0.25 * freqs), atol=1e-6)
    # odd dimension: a zero column is appended
    odd = timestep_embedding(torch.tensor([3.0]), 7)
    assert odd.shape == (1, 7) and odd[0, -1] == 0


def test_sincos_table_matches_formula_and_first_half_encodes_the_column():
    dim, grid = 16, 5
    table = sincos_pos_embed_2d(dim, grid)
    assert table.dtype == np.float64 and table.shape == (grid * grid, dim)
    np.testing.assert_allclose(table, sincos_table(dim, grid), atol=1e-12)
    by_pos = table.reshape(grid, grid, dim)  # [row, col]
    # first D/2 channels depend only on the column, last D/2 only on the row
    assert np.allclose(by_pos[:, :, : dim // 2], by_pos[:1, :, : dim // 2])
    assert np.allclose(by_pos[:, :, dim // 2 :], by_pos[:, :1, dim // 2 :])
    assert not np.allclose(by_pos[0, 0, : dim // 2], by_pos[0, 1, : dim // 2])  # column varies
    # sin first within a half: column 0 gives sin(0)=0 then cos(0)=1
    assert np.all(by_pos[0, 0, : dim // 4] == 0) and np.all(by_pos[0, 0, dim // 4 : dim // 2] == 1)


def test_label_embedder_null_row_and_dropout():
    assert LabelEmbedder(10, 8, 0.1).embedding_table.weight.shape == (11, 8)
    assert LabelEmbedder(10, 8, 0.0).embedding_table.weight.shape == (10, 8)
    emb = LabelEmbedder(10, 8, 0.5)
    labels = torch.arange(10).repeat(20)
    table = emb.embedding_table.weight
    # eval: no dropout
    assert torch.equal(emb(labels, train=False), table[labels])
    # train: drop where the global RNG's uniform draw is below p (same draw as the official code)
    torch.manual_seed(3)
    out = emb(labels, train=True)
    torch.manual_seed(3)
    dropped = torch.rand(len(labels)) < 0.5
    expected = torch.where(dropped, 10, labels)
    assert torch.equal(out, table[expected]) and 0 < dropped.sum() < len(labels)
    # forced drops, whatever the mode
    force = torch.zeros(len(labels), dtype=torch.long)
    force[:3] = 1
    assert torch.equal(emb(labels, train=False, force_drop_ids=force)[:3], table[[10, 10, 10]])
    assert torch.equal(emb(labels, train=False, force_drop_ids=force)[3:], table[labels[3:]])


def test_rmsnorm_formula_and_weight():
    norm = RMSNorm(6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(2, 3, 6)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * torch.arange(1.0, 7.0)
    torch.testing.assert_close(norm(x), expected)
    assert [n for n, _ in RMSNorm(6, affine=False).named_parameters()] == []


def test_swiglu_formula_and_lightningdit_hidden_size():
    mlp = make_mlp("swiglu", 48, 4.0)
    assert isinstance(mlp, SwiGLU)
    hidden = int(2 / 3 * int(48 * 4.0))  # 128
    assert mlp.w12.weight.shape == (2 * hidden, 48) and mlp.w3.weight.shape == (48, hidden)
    x = torch.randn(3, 48)
    a = x @ mlp.w12.weight[:hidden].T + mlp.w12.bias[:hidden]
    b = x @ mlp.w12.weight[hidden:].T + mlp.w12.bias[hidden:]
    expected = (a * torch.sigmoid(a) * b) @ mlp.w3.weight.T + mlp.w3.bias
    torch.testing.assert_close(mlp(x), expected)
    gelu = make_mlp("gelu", 48, 4.0)
    assert gelu.fc1.weight.shape == (192, 48)


def test_time_dependent_norm_formula_and_identity_at_init():
    norm = TimeDependentNorm(8)
    x, s = torch.randn(3, 5, 8), torch.tensor([0.0, 0.3, 1.0])
    plain = F.layer_norm(x, (8,), eps=1e-6)
    torch.testing.assert_close(norm(x, s), plain)  # γ=1, β=0 at every time when initialised
    with torch.no_grad():
        for p in norm.parameters():
            p.normal_()
    g, b = norm.gamma, norm.beta
    alpha_g = torch.sigmoid(s[:, None] * g.w + g.b)
    alpha_b = torch.sigmoid(s[:, None] * b.w + b.b)
    gamma = alpha_g * g.p1 + (1 - alpha_g) * g.p2
    beta = alpha_b * b.p1 + (1 - alpha_b) * b.p2
    torch.testing.assert_close(norm(x, s), plain * gamma[:, None] + beta[:, None])
    names = sorted(n for n, _ in norm.named_parameters())
    expected = sorted(f"{v}.{p}" for v in ("gamma", "beta") for p in ("p1", "p2", "w", "b"))
    assert names == expected


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return q @ k.transpose(-1, -2)


def test_rope_scores_depend_only_on_relative_position():
    head_dim, grid = 8, 5
    rope = AxialRoPE(head_dim, grid)
    q_vec, k_vec = torch.randn(head_dim), torch.randn(head_dim)
    # place the same q and k at every position: (1, 1, G·G, hd)
    q = rope(q_vec.expand(1, 1, grid * grid, head_dim))
    k = rope(k_vec.expand(1, 1, grid * grid, head_dim))
    scores = _scores(q, k)[0, 0].reshape(grid, grid, grid, grid)  # [qr, qc, kr, kc]
    # shift both positions by (1, 2): scores unchanged
    shifted = scores[1:, 2:, 1:, 2:]
    base = scores[:-1, :-2, :-1, :-2]
    torch.testing.assert_close(shifted, base, atol=1e-5, rtol=1e-5)
    # but scores do depend on the offset
    assert not torch.allclose(scores[0, 0, 0, 0], scores[0, 0, 0, 1])
    assert not torch.allclose(scores[0, 0, 0, 0], scores[0, 0, 1, 0])
    # rotation preserves norms, and position (0, 0) is not rotated
    torch.testing.assert_close(q.norm(dim=-1), q_vec.norm().expand(1, 1, grid * grid))
    torch.testing.assert_close(q[0, 0, 0], q_vec)
    # first half of the head turns with the row, second half with the column
    moved_col = rope(q_vec.expand(1, 1, grid * grid, head_dim))[0, 0, 1]
    torch.testing.assert_close(moved_col[: head_dim // 2], q_vec[: head_dim // 2])
    # leading extra tokens are left as they are
    extra = torch.randn(1, 1, grid * grid + 1, head_dim)
    out = rope(extra)
    torch.testing.assert_close(out[:, :, 0], extra[:, :, 0])
    torch.testing.assert_close(out[:, :, 1:], rope(extra[:, :, 1:]))
    assert list(rope.state_dict()) == []


def test_attention_matches_per_head_softmax_formula():
    torch.manual_seed(0)
    attn = Attention(12, 3, qk_norm=False)
    x = torch.randn(2, 5, 12)
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv[..., :12], qkv[..., 12:24], qkv[..., 24:]
    heads = []
    for h in range(3):
        sl = slice(4 * h, 4 * h + 4)
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2.0, dim=-1)
        heads.append(w @ v[..., sl])
    expected = torch.cat(heads, -1) @ attn.proj.weight.T + attn.proj.bias
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", [(10, 3)])
def test_attention_rejects_indivisible_heads(bad):
    with pytest.raises(ValueError, match="not divisible"):
        Attention(*bad)
