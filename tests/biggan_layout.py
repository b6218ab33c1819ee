"""Official BigGAN / BigGAN-deep state-dict layouts and direct reference forwards, for tests.

Written from the specification (biggan.md §2–3) alone, independent of genzoo's modules: the key
and shape tables build random "official" checkpoints, and the reference forwards compute the
documented formulas step by step from a state dict (slow, plain tensor code).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

# ajbrock G: resolution -> (block in-multipliers, block out-multipliers) (spec table §2).
G_CHANNELS = {
    128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1]),
    256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1]),
    512: ([16, 16, 8, 8, 4, 2, 1], [16, 8, 8, 4, 2, 1, 1]),
    64: ([16, 16, 8, 4], [16, 8, 4, 2]),
    32: ([4, 4, 4], [4, 4, 4]),
}
# D at 128 px: block in/out multipliers (3 = image channels, written as 0 here), 5 downsample.
D_IN, D_OUT = [0, 1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 16]
TINY_G = {"ch": 8, "dim_z": 30, "shared_dim": 16, "n_classes": 10}
TINY_DEEP_LAYERS = [
    (False, 16, 16), (True, 16, 8), (False, 8, 8), (True, 8, 4),
    (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1),
]  # fmt: skip
TINY_DEEP = {"ch": 8, "z_dim": 16, "n_classes": 10, "attention": 4, "n_stats": 51}
# Loader arguments of the tiny models.
TINY_KW = {"G_ch": 8, "dim_z": 30, "shared_dim": 16, "n_classes": 10, "hier": True}
EPS = {"BN_eps": 1e-5, "SN_eps": 1e-6}
DEEP_KW = {"output_dim": 64, "layers": TINY_DEEP_LAYERS, "attention_layer_position": 4}


def _sn(prefix: str, shape: tuple, bias: bool, sv: bool) -> list:
    rows = [(f"{prefix}.weight", shape)]
    if bias:
        rows.append((f"{prefix}.bias", (shape[0],)))
    rows.append((f"{prefix}.u0", (1, shape[0])))
    if sv:
        rows.append((f"{prefix}.sv0", (1,)))
    return rows


def _attention(prefix: str, c: int, sv: bool) -> list:
    rows = [(f"{prefix}.gamma", ())]
    rows += _sn(f"{prefix}.theta", (c // 8, c, 1, 1), False, sv)
    rows += _sn(f"{prefix}.phi", (c // 8, c, 1, 1), False, sv)
    rows += _sn(f"{prefix}.g", (c // 2, c, 1, 1), False, sv)
    rows += _sn(f"{prefix}.o", (c, c // 2, 1, 1), False, sv)
    return rows


def g_layout(ch, dim_z, shared_dim, n_classes, resolution=128, attn=(64,), sv=True) -> list:
    """[(key, shape)] of an ajbrock G with hierarchical z and a shared embedding."""
    ins, outs = ([ch * m for m in ms] for ms in G_CHANNELS[resolution])
    chunk = dim_z // (len(ins) + 1)
    cond = shared_dim + chunk
    rows = [("shared.weight", (n_classes, shared_dim))]
    rows += _sn("linear", (ins[0] * 16, chunk), True, sv)
    for i, (cin, cout) in enumerate(zip(ins, outs)):
        b = f"blocks.{i}.0"
        rows += _sn(f"{b}.conv1", (cout, cin, 3, 3), True, sv)
        rows += _sn(f"{b}.conv2", (cout, cout, 3, 3), True, sv)
        rows += _sn(f"{b}.conv_sc", (cout, cin, 1, 1), True, sv)
        for name, c in (("bn1", cin), ("bn2", cout)):
            rows += _sn(f"{b}.{name}.gain", (c, cond), False, sv)
            rows += _sn(f"{b}.{name}.bias", (c, cond), False, sv)
            rows += [(f"{b}.{name}.stored_mean", (c,)), (f"{b}.{name}.stored_var", (c,))]
        if 8 * 2**i in attn:
            rows += _attention(f"blocks.{i}.1", cout, sv)
    rows += [(f"output_layer.0.{n}", (ch,)) for n in ("gain", "bias", "stored_mean", "stored_var")]
    rows += _sn("output_layer.2", (3, ch, 3, 3), True, sv)
    return rows


def d_layout(ch, n_classes, attn_after=(0,)) -> list:
    """[(key, shape)] of the ajbrock D at 128 px."""
    rows = []
    for i, (a, b) in enumerate(zip(D_IN, D_OUT)):
        cin, cout = (3 if a == 0 else ch * a), ch * b
        p = f"blocks.{i}.0"
        rows += _sn(f"{p}.conv1", (cout, cin, 3, 3), True, True)
        rows += _sn(f"{p}.conv2", (cout, cout, 3, 3), True, True)
        if i < 5:
            rows += _sn(f"{p}.conv_sc", (cout, cin, 1, 1), True, True)
        if i in attn_after:
            rows += _attention(f"blocks.{i}.1", cout, True)
    rows += _sn("linear", (1, 16 * ch), True, True)
    rows += [("embed.weight", (n_classes, 16 * ch)), ("embed.u0", (1, n_classes))]
    rows += [("embed.sv0", (1,))]
    return rows


def _torch_sn(prefix: str, shape: tuple, bias: bool) -> list:
    rows = [(f"{prefix}.weight_orig", shape)]
    if bias:
        rows.append((f"{prefix}.bias", (shape[0],)))
    return rows + [
        (f"{prefix}.weight_u", (shape[0],)),
        (f"{prefix}.weight_v", (math.prod(shape[1:]),)),
    ]


def deep_layout(ch, z_dim, n_classes, layers, attention, n_stats) -> list:
    """[(key, shape)] of the HF BigGAN-deep port."""
    cond = 2 * z_dim
    rows = [("embeddings.weight", (z_dim, n_classes))]
    rows += _torch_sn("generator.gen_z", (16 * 16 * ch, cond), True)
    j = 0
    for i, (_, a, b) in enumerate(layers):
        cin, cout = ch * a, ch * b
        if i == attention:
            p = f"generator.layers.{j}"
            rows.append((f"{p}.gamma", (1,)))
            rows += _torch_sn(f"{p}.snconv1x1_theta", (cin // 8, cin, 1, 1), False)
            rows += _torch_sn(f"{p}.snconv1x1_phi", (cin // 8, cin, 1, 1), False)
            rows += _torch_sn(f"{p}.snconv1x1_g", (cin // 2, cin, 1, 1), False)
            rows += _torch_sn(f"{p}.snconv1x1_o_conv", (cin, cin // 2, 1, 1), False)
            j += 1
        p, mid = f"generator.layers.{j}", cin // 4
        for k, c in enumerate((cin, mid, mid, mid)):
            rows += [(f"{p}.bn_{k}.running_means", (n_stats, c))]
            rows += [(f"{p}.bn_{k}.running_vars", (n_stats, c))]
            rows += _torch_sn(f"{p}.bn_{k}.scale", (c, cond), False)
            rows += _torch_sn(f"{p}.bn_{k}.offset", (c, cond), False)
        rows += _torch_sn(f"{p}.conv_0", (mid, cin, 1, 1), True)
        rows += _torch_sn(f"{p}.conv_1", (mid, mid, 3, 3), True)
        rows += _torch_sn(f"{p}.conv_2", (mid, mid, 3, 3), True)
        rows += _torch_sn(f"{p}.conv_3", (cout, mid, 1, 1), True)
        j += 1
    rows += [("generator.bn.weight", (ch,)), ("generator.bn.bias", (ch,))]
    rows += [
        ("generator.bn.running_means", (n_stats, ch)),
        ("generator.bn.running_vars", (n_stats, ch)),
    ]
    rows += _torch_sn("generator.conv_to_rgb", (ch, ch, 3, 3), True)
    return rows


def random_state(layout: list, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the layout's shapes: variances positive, attention gains non-zero, and
    the sv logs set to values that would visibly change outputs if anything divided by them."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout:
        if key.endswith(("stored_var", "running_vars")):
            t = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(("stored_mean", "running_means")):
            t = 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("gamma"):
            t = torch.full(shape, 0.7)
        elif key.endswith(".sv0"):
            t = torch.full(shape, 123.0)
        elif key in ("output_layer.0.gain", "generator.bn.weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) * (0.3 if key.endswith("bias") else 1.0)
        state[key] = t
    for key in [k for k in state if k.endswith(".weight_orig")]:
        # As the converter filled them: v and u from one power step of a random u.
        p, m = key[: -len("weight_orig")], state[key].reshape(state[key].shape[0], -1)
        v = F.normalize(m.t() @ state[p + "weight_u"], dim=0)
        state[p + "weight_v"], state[p + "weight_u"] = v, F.normalize(m @ v, dim=0)
    return state


# -- reference forwards -----------------------------------------------------------------------


def power_step(w: torch.Tensor, u: torch.Tensor, eps: float):
    """ajbrock SN: v = normalize(u W), u' = normalize(v Wᵀ), σ = v Wᵀ u'ᵀ -> (u', σ)."""
    m = w.reshape(w.shape[0], -1)
    v = u @ m
    v = v / max(v.norm().item(), eps)
    u_new = v @ m.t()
    u_new = u_new / max(u_new.norm().item(), eps)
    return u_new, (v @ m.t() @ u_new.t()).item()


def _up(x):
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def _maxpool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))


def _avgpool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def _attend(x, wt, wp, wg, wo, gamma):
    n, c, h, w = x.shape
    theta = F.conv2d(x, wt).flatten(2)
    phi = _maxpool(F.conv2d(x, wp)).flatten(2)
    g = _maxpool(F.conv2d(x, wg)).flatten(2)
    attn = torch.softmax(torch.einsum("ncq,nck->nqk", theta, phi), dim=-1)
    out = torch.einsum("nck,nqk->ncq", g, attn).reshape(n, c // 2, h, w)
    return x + gamma * F.conv2d(out, wo)


def _bn(x, mean, var, eps, scale, shift):
    m, v = mean[None, :, None, None], var[None, :, None, None]
    return (x - m) / torch.sqrt(v + eps) * scale + shift


def reference_g(s, z, y, *, resolution=128, attn=(64,), bn_eps=1e-5, sn_eps=1e-6):
    """The ajbrock G eval forward from a state dict: labels y are embedded by shared.weight."""

    def w(p):
        return s[p + ".weight"] / power_step(s[p + ".weight"], s[p + ".u0"], sn_eps)[1]

    def conv(p, x, pad):
        return F.conv2d(x, w(p), s[p + ".bias"], padding=pad)

    blocks = len(G_CHANNELS[resolution][0])
    e = s["shared.weight"][y]
    zs = z.split(z.shape[1] // (blocks + 1), dim=1)
    h = (zs[0] @ w("linear").t() + s["linear.bias"]).reshape(z.shape[0], -1, 4, 4)
    for i in range(blocks):
        p, c = f"blocks.{i}.0", torch.cat([e, zs[i + 1]], dim=1)

        def ccbn(name, x, p=p, c=c):
            scale = 1 + c @ w(f"{p}.{name}.gain").t()
            shift = c @ w(f"{p}.{name}.bias").t()
            mean, var = s[f"{p}.{name}.stored_mean"], s[f"{p}.{name}.stored_var"]
            return _bn(x, mean, var, bn_eps, scale[:, :, None, None], shift[:, :, None, None])

        t = conv(f"{p}.conv1", _up(torch.relu(ccbn("bn1", h))), 1)
        t = conv(f"{p}.conv2", torch.relu(ccbn("bn2", t)), 1)
        h = t + conv(f"{p}.conv_sc", _up(h), 0)
        if 8 * 2**i in attn:
            a = f"blocks.{i}.1"
            h = _attend(h, *(w(f"{a}.{n}") for n in ("theta", "phi", "g", "o")), s[f"{a}.gamma"])
    o = "output_layer.0"
    gain, bias = s[o + ".gain"][None, :, None, None], s[o + ".bias"][None, :, None, None]
    h = torch.relu(_bn(h, s[o + ".stored_mean"], s[o + ".stored_var"], 1e-5, gain, bias))
    return torch.tanh(conv("output_layer.2", h, 1))


def reference_d(s, x, y, *, attn_after=(0,), sn_eps=1e-6):
    """The ajbrock D (128 px) forward from a state dict."""

    def w(p):
        return s[p + ".weight"] / power_step(s[p + ".weight"], s[p + ".u0"], sn_eps)[1]

    def conv(p, x, pad):
        return F.conv2d(x, w(p), s[p + ".bias"], padding=pad)

    h = x
    for i in range(6):
        p, down = f"blocks.{i}.0", i < 5
        t = torch.relu(h) if i > 0 else h
        t = conv(f"{p}.conv2", torch.relu(conv(f"{p}.conv1", t, 1)), 1)
        t = _avgpool(t) if down else t
        if i == 0:
            shortcut = conv(f"{p}.conv_sc", _avgpool(h), 0)
        elif down:
            shortcut = _avgpool(conv(f"{p}.conv_sc", h, 0))
        else:
            shortcut = h
        h = t + shortcut
        if i in attn_after:
            a = f"blocks.{i}.1"
            h = _attend(h, *(w(f"{a}.{n}") for n in ("theta", "phi", "g", "o")), s[f"{a}.gamma"])
    h = torch.relu(h).sum(dim=(2, 3))
    embed = s["embed.weight"] / power_step(s["embed.weight"], s["embed.u0"], sn_eps)[1]
    return h @ w("linear").t() + s["linear.bias"] + (embed[y] * h).sum(dim=1, keepdim=True)


def reference_deep(s, z, class_vector, truncation, *, layers, attention, eps=1e-4):
    """The HF BigGAN-deep forward from a state dict (torch SN in eval: σ = uᵀ W v)."""

    def w(p):
        m = s[p + ".weight_orig"]
        return m / (s[p + ".weight_u"] @ m.reshape(m.shape[0], -1) @ s[p + ".weight_v"])

    def conv(p, x, pad=0):
        return F.conv2d(x, w(p), s[p + ".bias"], padding=pad)

    def stats(p):
        means, vars_ = s[p + ".running_means"], s[p + ".running_vars"]
        q = truncation / (1.0 / (means.shape[0] - 1))
        i = int(q)
        f = q - i
        if f == 0:
            return means[i], vars_[i]
        return f * means[i] + (1 - f) * means[i + 1], f * vars_[i] + (1 - f) * vars_[i + 1]

    cond = torch.cat([z, class_vector @ s["embeddings.weight"].t()], dim=1)
    h = cond @ w("generator.gen_z").t() + s["generator.gen_z.bias"]
    ch = s["generator.bn.weight"].shape[0]
    h = h.reshape(-1, 4, 4, 16 * ch).permute(0, 3, 1, 2)
    j = 0
    for i, (upsample, a, b) in enumerate(layers):
        if i == attention:
            p = f"generator.layers.{j}."
            ws = (w(p + n) for n in ("snconv1x1_theta", "snconv1x1_phi", "snconv1x1_g"))
            h = _attend(h, *ws, w(p + "snconv1x1_o_conv"), s[p + "gamma"])
            j += 1
        p = f"generator.layers.{j}."

        def cbn(k, x, p=p):
            mean, var = stats(f"{p}bn_{k}")
            scale = 1 + cond @ w(f"{p}bn_{k}.scale").t()
            return _bn(x, mean, var, eps, scale[:, :, None, None],
                       (cond @ w(f"{p}bn_{k}.offset").t())[:, :, None, None])  # fmt: skip

        t = conv(p + "conv_0", torch.relu(cbn(0, h)))
        t = torch.relu(cbn(1, t))
        t = conv(p + "conv_1", _up(t) if upsample else t, 1)
        t = conv(p + "conv_2", torch.relu(cbn(2, t)), 1)
        t = conv(p + "conv_3", torch.relu(cbn(3, t)))
        skip = h[:, : h.shape[1] // 2] if a != b else h
        h = t + (_up(skip) if upsample else skip)
        j += 1
    mean, var = stats("generator.bn")
    gain = s["generator.bn.weight"][None, :, None, None]
    h = torch.relu(_bn(h, mean, var, eps, gain, s["generator.bn.bias"][None, :, None, None]))
    return torch.tanh(conv("generator.conv_to_rgb", h, 1)[:, :3])


def reference_translate_cutout(y, tx, ty, cx, cy, side):
    """DiffAugment's translation (zeros shift in) then cutout (a side×side square of zeros
    around each centre, clamped to the image), pixel by pixel."""
    n_, _, h, w = y.shape
    out = torch.zeros_like(y)
    for n in range(n_):
        for i in range(h):
            for j in range(w):
                si, sj = i + int(tx[n]), j + int(ty[n])
                if 0 <= si < h and 0 <= sj < w:
                    out[n, :, i, j] = y[n, :, si, sj]
        for i in range(side):
            for j in range(side):
                r = min(max(int(cx[n]) - side // 2 + i, 0), h - 1)
                q = min(max(int(cy[n]) - side // 2 + j, 0), w - 1)
                out[n, :, r, q] = 0
    return out


def tiny_g_state(seed=0, sv=True):
    t = TINY_G
    return random_state(g_layout(t["ch"], t["dim_z"], t["shared_dim"], t["n_classes"], sv=sv), seed)


def tiny_deep_state(seed=0):
    t = TINY_DEEP
    layout = deep_layout(t["ch"], t["z_dim"], t["n_classes"], TINY_DEEP_LAYERS, 4, t["n_stats"])
    return random_state(layout, seed)


class FakeContext:
    """The training context a GAN step sees: random 32-px batches with per-batch generators."""

    def __init__(self, model, discriminator, family, accum=2, batch=4):
        self.model = self.net = model
        self.aux = {"D": discriminator}
        self.optimizers = family.make_optimizers(model, self.aux)
        self.accum, self.step, self.calls, self.batch = accum, 0, 0, batch
        self.data = torch.Generator().manual_seed(7)

    def next_batch(self):
        self.calls += 1
        x = torch.rand((self.batch, 3, 32, 32), generator=self.data) * 2 - 1
        y = torch.randint(10, (self.batch,), generator=self.data)
        return x, y, torch.Generator().manual_seed(1000 + self.calls)

    def autocast(self):
        return contextlib.nullcontext()

    def no_sync(self, net, last):
        return contextlib.nullcontext()
