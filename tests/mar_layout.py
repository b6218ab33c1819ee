"""For the tests: MAR's official layout and computations, written from the specification.

Independent of genzoo's modules: the keys and shapes come from the key table (mar.md §3), the
reference forward pass from §4 (float64, LayerNorm, attention softmax and erf-GELU written
out, masked rows dropped and scattered back with explicit per-row loops), the head diffusion
from §4–§5 (the cosine betas, the fractional-stride respacing, the ancestral step), and the
reference sampler from §6 (numpy's shuffles, then torch's draws in the stated order). Used to
build random "official" checkpoints and to check genzoo's numbers against them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

OFFICIAL_DEFAULTS = dict(
    img_size=256, vae_stride=16, patch_size=1, encoder_embed_dim=1024, encoder_depth=16,
    encoder_num_heads=16, decoder_embed_dim=1024, decoder_depth=16, decoder_num_heads=16,
    mlp_ratio=4.0, vae_embed_dim=16, class_num=1000, buffer_size=64, diffloss_d=3,
    diffloss_w=1024,
)  # fmt: skip
# §2: width, depth, heads, head depth, head width, parameters, keys
PUBLISHED = {
    "B": (768, 12, 12, 6, 1024, 207_924_768, 364),
    "L": (1024, 16, 16, 8, 1280, 478_326_304, 476),
    "H": (1280, 20, 16, 12, 1536, 942_403_104, 604),
}
# A tiny model: 16 tokens (a 4×4 grid of 2×2 patches of a 4-channel 8×8 latent) of 16 values,
# encoder and decoder of different widths.
TINY = dict(
    img_size=32, vae_stride=4, patch_size=2, vae_embed_dim=4, encoder_embed_dim=32,
    encoder_depth=2, encoder_num_heads=4, decoder_embed_dim=24, decoder_depth=1,
    decoder_num_heads=2, buffer_size=3, diffloss_d=2, diffloss_w=40, class_num=10,
    num_sampling_steps="10",
)  # fmt: skip
EPS = 1e-6


def sizes(**args):
    a = {**OFFICIAL_DEFAULTS, **args}
    grid = a["img_size"] // a["vae_stride"] // a["patch_size"]
    return a, grid * grid, a["vae_embed_dim"] * a["patch_size"] ** 2


def official_shapes(**args) -> list[tuple[str, tuple[int, ...]]]:
    """[(key, shape)] in the official order (§3)."""
    a, L, ct = sizes(**args)
    de, dd, bf, w = (
        a["encoder_embed_dim"],
        a["decoder_embed_dim"],
        a["buffer_size"],
        a["diffloss_w"],
    )
    out = [("fake_latent", (1, de)), ("encoder_pos_embed_learned", (1, bf + L, de)),
           ("mask_token", (1, 1, dd)), ("decoder_pos_embed_learned", (1, bf + L, dd)),
           ("diffusion_pos_embed_learned", (1, L, dd)), ("class_emb.weight", (a["class_num"], de)),
           ("z_proj.weight", (de, ct)), ("z_proj.bias", (de,)), ("z_proj_ln.weight", (de,)),
           ("z_proj_ln.bias", (de,))]  # fmt: skip

    def blocks(prefix: str, d: int, depth: int) -> list:
        hidden = int(d * a["mlp_ratio"])
        rows = []
        for i in range(depth):
            b = f"{prefix}.{i}."
            rows += [(b + "norm1.weight", (d,)), (b + "norm1.bias", (d,)),
                     (b + "attn.qkv.weight", (3 * d, d)), (b + "attn.qkv.bias", (3 * d,)),
                     (b + "attn.proj.weight", (d, d)), (b + "attn.proj.bias", (d,)),
                     (b + "norm2.weight", (d,)), (b + "norm2.bias", (d,)),
                     (b + "mlp.fc1.weight", (hidden, d)), (b + "mlp.fc1.bias", (hidden,)),
                     (b + "mlp.fc2.weight", (d, hidden)), (b + "mlp.fc2.bias", (d,))]  # fmt: skip
        return rows

    out += blocks("encoder_blocks", de, a["encoder_depth"])
    out += [("encoder_norm.weight", (de,)), ("encoder_norm.bias", (de,)),
            ("decoder_embed.weight", (dd, de)), ("decoder_embed.bias", (dd,))]  # fmt: skip
    out += blocks("decoder_blocks", dd, a["decoder_depth"])
    out += [("decoder_norm.weight", (dd,)), ("decoder_norm.bias", (dd,))]
    n = "diffloss.net."
    out += [(n + "time_embed.mlp.0.weight", (w, 256)), (n + "time_embed.mlp.0.bias", (w,)),
            (n + "time_embed.mlp.2.weight", (w, w)), (n + "time_embed.mlp.2.bias", (w,)),
            (n + "cond_embed.weight", (w, dd)), (n + "cond_embed.bias", (w,)),
            (n + "input_proj.weight", (w, ct)), (n + "input_proj.bias", (w,))]  # fmt: skip
    for j in range(a["diffloss_d"]):
        r = f"{n}res_blocks.{j}."
        out += [(r + "in_ln.weight", (w,)), (r + "in_ln.bias", (w,)),
                (r + "mlp.0.weight", (w, w)), (r + "mlp.0.bias", (w,)),
                (r + "mlp.2.weight", (w, w)), (r + "mlp.2.bias", (w,)),
                (r + "adaLN_modulation.1.weight", (3 * w, w)),
                (r + "adaLN_modulation.1.bias", (3 * w,))]  # fmt: skip
    f = n + "final_layer."
    out += [(f + "linear.weight", (2 * ct, w)), (f + "linear.bias", (2 * ct,)),
            (f + "adaLN_modulation.1.weight", (2 * w, w)),
            (f + "adaLN_modulation.1.bias", (2 * w,))]  # fmt: skip
    return out


def random_official_state_dict(seed: int, **args) -> dict[str, torch.Tensor]:
    """Random float32 weights in the official layout; norms near 1, everything else small."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in official_shapes(**args):
        value = torch.randn(shape, generator=g) * 0.1
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "ln.weight")):
            value = value + 1.0
        elif key.endswith(".weight") and len(shape) == 2:
            value = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        state[key] = value
    return state


# -- §4: the forward pass ----------------------------------------------------------------------


def patchify(latents: torch.Tensor, p: int) -> torch.Tensor:
    """Token n = row·G + col; feature channel·p² + a·p + b (explicit loops)."""
    b, c, h, w = latents.shape
    g = h // p
    out = torch.zeros(b, g * g, c * p * p, dtype=latents.dtype)
    for row in range(g):
        for col in range(g):
            for ch in range(c):
                for a in range(p):
                    for q in range(p):
                        value = latents[:, ch, row * p + a, col * p + q]
                        out[:, row * g + col, ch * p * p + a * p + q] = value
    return out


def _d(state, key):
    return state[key].double()


def layer_norm(x, weight=None, bias=None):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    out = (x - mu) / torch.sqrt(var + EPS)
    return out if weight is None else out * weight + bias


def linear(state, prefix, x):
    return x @ _d(state, prefix + ".weight").T + _d(state, prefix + ".bias")


def vit_block(state, prefix, x, heads):
    b, t, d = x.shape
    hd = d // heads
    h = layer_norm(x, _d(state, prefix + ".norm1.weight"), _d(state, prefix + ".norm1.bias"))
    qkv = linear(state, prefix + ".attn.qkv", h)
    q, k, v = (
        qkv[..., i * d : (i + 1) * d].reshape(b, t, heads, hd).transpose(1, 2) for i in range(3)
    )
    scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
    weights = torch.exp(scores - scores.amax(-1, keepdim=True))
    weights = weights / weights.sum(-1, keepdim=True)
    attended = (weights @ v).transpose(1, 2).reshape(b, t, d)
    x = x + linear(state, prefix + ".attn.proj", attended)
    h = layer_norm(x, _d(state, prefix + ".norm2.weight"), _d(state, prefix + ".norm2.bias"))
    h = linear(state, prefix + ".mlp.fc1", h)
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
    return x + linear(state, prefix + ".mlp.fc2", h)


def reference_condition(state, args, tokens, mask, y) -> torch.Tensor:
    """z (B, L, D_dec) in float64; y == class_num selects fake_latent."""
    a, L, _ = sizes(**args)
    bf, k = a["buffer_size"], a["class_num"]
    b = tokens.shape[0]
    x = linear(state, "z_proj", tokens.double())
    x = torch.cat([torch.zeros(b, bf, x.shape[-1], dtype=x.dtype), x], dim=1)
    for i in range(b):
        label = int(y[i])
        x[i, :bf] = (
            _d(state, "fake_latent")[0] if label == k else _d(state, "class_emb.weight")[label]
        )
    x = layer_norm(x + _d(state, "encoder_pos_embed_learned"), _d(state, "z_proj_ln.weight"),
                   _d(state, "z_proj_ln.bias"))  # fmt: skip
    kept = [[j for j in range(bf + L) if j < bf or not bool(mask[i, j - bf])] for i in range(b)]
    x = torch.stack([x[i, kept[i]] for i in range(b)])
    for i in range(a["encoder_depth"]):
        x = vit_block(state, f"encoder_blocks.{i}", x, a["encoder_num_heads"])
    x = layer_norm(x, _d(state, "encoder_norm.weight"), _d(state, "encoder_norm.bias"))
    x = linear(state, "decoder_embed", x)
    grid = _d(state, "mask_token").repeat(b, bf + L, 1)
    for i in range(b):
        for slot, j in enumerate(kept[i]):
            grid[i, j] = x[i, slot]
    x = grid + _d(state, "decoder_pos_embed_learned")
    for i in range(a["decoder_depth"]):
        x = vit_block(state, f"decoder_blocks.{i}", x, a["decoder_num_heads"])
    x = layer_norm(x, _d(state, "decoder_norm.weight"), _d(state, "decoder_norm.bias"))
    return x[:, bf:] + _d(state, "diffusion_pos_embed_learned")


def silu(x):
    return x * torch.sigmoid(x)


def reference_head(state, x, t, c, prefix="diffloss.net.") -> torch.Tensor:
    """The head output (N, 2·Ct), float64: cos-first time features, (shift, scale, gate)."""
    k = torch.arange(128, dtype=torch.float32)
    freqs = torch.exp(-math.log(10000.0) * k / 128)  # float32, as the official code
    args = (t.float()[:, None] * freqs[None]).double()
    temb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    temb = linear(
        state, prefix + "time_embed.mlp.2", silu(linear(state, prefix + "time_embed.mlp.0", temb))
    )
    y = temb + linear(state, prefix + "cond_embed", c.double())
    h = linear(state, prefix + "input_proj", x.double())
    j = 0
    while f"{prefix}res_blocks.{j}.in_ln.weight" in state:
        r = f"{prefix}res_blocks.{j}."
        shift, scale, gate = linear(state, r + "adaLN_modulation.1", silu(y)).chunk(3, dim=1)
        u = layer_norm(h, _d(state, r + "in_ln.weight"), _d(state, r + "in_ln.bias"))
        u = linear(state, r + "mlp.2", silu(linear(state, r + "mlp.0", u * (1 + scale) + shift)))
        h, j = h + gate * u, j + 1
    shift, scale = linear(state, prefix + "final_layer.adaLN_modulation.1", silu(y)).chunk(2, dim=1)
    return linear(state, prefix + "final_layer.linear", layer_norm(h) * (1 + scale) + shift)


def reference_guided_head(state, x, t, c, s, prefix="diffloss.net.") -> torch.Tensor:
    """§4 guided head: first half of x for both halves, all eps channels guided, v untouched."""
    n = x.shape[0] // 2
    out = reference_head(state, torch.cat([x[:n], x[:n]]), t, c, prefix)
    ct = x.shape[1]
    eps, v = out[:, :ct], out[:, ct:]
    mixed = eps[n:] + s * (eps[:n] - eps[n:])
    return torch.cat([torch.cat([mixed, mixed]), v], dim=1)


# -- §4–§5: the head diffusion -------------------------------------------------------------------


def cosine_alpha_bar(u: float) -> float:
    return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2


def cosine_betas(steps: int = 1000) -> np.ndarray:
    return np.array([min(1 - cosine_alpha_bar((i + 1) / steps) / cosine_alpha_bar(i / steps), 0.999)
                     for i in range(steps)])  # fmt: skip


def respaced_indices(count: int, steps: int = 1000) -> list[int]:
    """§5: a fractional stride (steps − 1)/(count − 1), Python rounding."""
    stride = (steps - 1) / (count - 1) if count > 1 else 1.0
    return [round(i * stride) for i in range(count)]


class Process:
    """The (respaced) coefficient tables, float64."""

    def __init__(self, indices: list[int] | None = None):
        alpha_bar = np.cumprod(1 - cosine_betas())
        indices = list(range(1000)) if indices is None else indices
        self.timesteps = indices
        kept = alpha_bar[indices]
        self.alpha_bar = kept
        self.alpha_bar_prev = np.append(1.0, kept[:-1])
        self.betas = 1 - kept / self.alpha_bar_prev
        self.posterior_var = self.betas * (1 - self.alpha_bar_prev) / (1 - kept)
        self.log_var_clipped = np.log(np.append(self.posterior_var[1], self.posterior_var[1:]))
        self.coef1 = self.betas * np.sqrt(self.alpha_bar_prev) / (1 - kept)
        self.coef2 = (1 - self.alpha_bar_prev) * np.sqrt(1 - self.betas) / (1 - kept)

    def step_terms(self, i, x, eps, v):
        """(model mean, model log variance) at (respaced) step i, float64."""
        ab = self.alpha_bar[i]
        x0 = math.sqrt(1 / ab) * x - math.sqrt(1 / ab - 1) * eps
        mean = self.coef1[i] * x0 + self.coef2[i] * x
        f = (v + 1) / 2
        return mean, f * math.log(self.betas[i]) + (1 - f) * self.log_var_clipped[i]


def reference_head_sample(
    state, z, process, *, temperature, scale, first, step_draws, prefix="diffloss.net."
):
    """§5 ancestral loop; `first` is x_T (n, Ct), step_draws(j, rows) the noise of step j ≥ 1."""
    ct = first.shape[1]
    x = torch.cat([first, first]) if scale is not None else first
    for j, i in enumerate(reversed(range(len(process.timesteps))), start=1):
        t = torch.full((x.shape[0],), process.timesteps[i], dtype=torch.long)
        if scale is None:
            out = reference_head(state, x, t, z, prefix)
        else:
            out = reference_guided_head(state, x, t, z, scale, prefix)
        mean, log_var = process.step_terms(i, x, out[:, :ct], out[:, ct:])
        draw = step_draws(j, x.shape[0]).double()
        x = mean + (1.0 if i > 0 else 0.0) * torch.exp(0.5 * log_var) * draw * temperature
    return x[: first.shape[0]]


def approx_cdf(x):
    return 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def reference_loss(state, target, z, t, noise, mask=None, prefix="diffloss.net."):
    """§4 loss: mse(eps) + vb in bits (decoder NLL at t = 0), mask-weighted mean."""
    p = Process()
    target, noise = target.double(), noise.double()
    ab = torch.tensor(p.alpha_bar)[t][:, None]
    x_t = ab.sqrt() * target + (1 - ab).sqrt() * noise
    out = reference_head(state, x_t, t, z, prefix)
    ct = target.shape[1]
    eps, v = out[:, :ct], out[:, ct:]
    mse = ((noise - eps) ** 2).mean(1)
    rows = []
    for r in range(target.shape[0]):
        i = int(t[r])
        mean, log_var = p.step_terms(i, x_t[r], eps[r], v[r])
        if i == 0:
            centred, inv = target[r] - mean, torch.exp(-0.5 * log_var)
            up, down = approx_cdf(inv * (centred + 1 / 255)), approx_cdf(inv * (centred - 1 / 255))
            inner = torch.where(target[r] > 0.999, torch.log((1 - down).clamp(min=1e-12)),
                                torch.log((up - down).clamp(min=1e-12)))  # fmt: skip
            log_p = torch.where(target[r] < -0.999, torch.log(up.clamp(min=1e-12)), inner)
            rows.append((-log_p).mean() / math.log(2))
        else:
            true_mean = p.coef1[i] * target[r] + p.coef2[i] * x_t[r]
            lv1 = p.log_var_clipped[i]
            kl = 0.5 * (-1 + log_var - lv1 + torch.exp(lv1 - log_var)
                        + (true_mean - mean) ** 2 * torch.exp(-log_var))  # fmt: skip
            rows.append(kl.mean() / math.log(2))
    per_row = mse + torch.stack(rows)
    if mask is None:
        return per_row.mean()
    return (per_row * mask.double()).sum() / mask.double().sum()


# -- §6: the sampler -----------------------------------------------------------------------------


def reference_sample(state, args, y, *, num_iter, cfg=1.0, schedule="linear", temperature=1.0,
                     steps=None, orders=None, noise=None) -> torch.Tensor:  # fmt: skip
    """Tokens (B, L, Ct) float64. orders/noise None: numpy shuffles, then torch draws."""
    a, L, ct = sizes(**args)
    b, k = y.shape[0], a["class_num"]
    count = int(steps or args.get("num_sampling_steps", 100))
    process = Process(respaced_indices(count))
    if orders is None:
        rows = []
        for _ in range(b):
            order = np.arange(L)
            np.random.shuffle(order)
            rows.append(order)
        orders = torch.from_numpy(np.array(rows))
    tokens = torch.zeros(b, L, ct, dtype=torch.float64)
    mask = torch.ones(b, L, dtype=torch.bool)
    for step in range(num_iter):
        guided = cfg != 1.0
        labels = torch.cat([y, torch.full_like(y, k)]) if guided else y
        both = (lambda v: torch.cat([v, v])) if guided else (lambda v: v)
        z = reference_condition(state, args, both(tokens), both(mask), labels)
        m = math.floor(L * math.cos(math.pi / 2 * (step + 1) / num_iter))
        m = max(1, min(int(mask[0].sum()) - 1, m))
        nxt = torch.zeros(b, L, dtype=torch.bool)
        for i in range(b):
            nxt[i, orders[i, :m]] = True
        predict = mask.clone() if step == num_iter - 1 else mask & ~nxt
        where = [(i, j) for i in range(b) for j in range(L) if predict[i, j]]
        zc = torch.stack([z[i, j] for i, j in where])
        if guided:
            zc = torch.cat([zc, torch.stack([z[b + i, j] for i, j in where])])
        scale = (cfg if schedule == "constant" else 1 + (cfg - 1) * (L - m) / L) if guided else None
        if noise is None:
            first = torch.randn(len(where), ct).double()

            def step_draws(j, rows):
                return torch.randn(rows, ct)
        else:
            table = torch.stack([noise[i, j] for i, j in where]).double()
            first = table[:, 0]

            def step_draws(j, rows, table=table):
                return torch.cat([table[:, j]] * (rows // table.shape[0]))

        new = reference_head_sample(state, zc, process, temperature=temperature, scale=scale,
                                    first=first, step_draws=step_draws)  # fmt: skip
        for r, (i, j) in enumerate(where):
            tokens[i, j] = new[r]
        mask = nxt if step < num_iter - 1 else torch.zeros_like(mask)
    return tokens
