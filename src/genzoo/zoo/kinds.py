"""Which official model a state dict belongs to, told by its characteristic keys.

Loaders use this to turn "missing keys …" into "this file is a VAR tokenizer, not a LlamaGen
GPT; load it with …". The keys come from the official layouts (see each zoo module).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from genzoo.errors import GenzooError

# kind -> (what it is, how genzoo loads it)
KINDS: dict[str, tuple[str, str]] = {
    "dit": (
        "an official DiT or SiT network (same layout)",
        "genzoo.load_official('dit', ...) or load_official('sit', ...)",
    ),
    "llamagen": ("a LlamaGen class-conditional GPT", "genzoo.load_official('llamagen', ...)"),
    "llamagen-t2i": ("a LlamaGen text-to-image GPT (not supported)", "no genzoo loader"),
    "llamagen-vq": (
        "a LlamaGen VQ tokenizer",
        "genzoo.load_official_tokenizer('llamagen-vq', ...)",
    ),
    "rar": ("a RAR generator", "genzoo.load_official('rar', ...)"),
    "var": ("a VAR transformer", "genzoo.load_official('var', ...)"),
    "var-vqvae": ("a VAR multi-scale VQVAE", "genzoo.load_official_tokenizer('var-vqvae', ...)"),
    "maskgit": ("a MaskGIT-style (TiTok) generator", "genzoo.load_official('maskgit', ...)"),
    "maskgit-vqgan": (
        "a MaskGIT VQGAN tokenizer",
        "genzoo.load_official_tokenizer('maskgit-vqgan', ...)",
    ),
    "mar": ("a MAR generator", "genzoo.load_official('mar', ...)"),
    "mar-kl16": ("MAR's KL-16 VAE", "genzoo.load_official_tokenizer('mar-kl16', ...)"),
    "uvit": ("a U-ViT network", "genzoo.load_official('uvit', ...)"),
    "adm": ("an ADM (guided-diffusion) UNet", "genzoo.load_official('adm', ...)"),
    "adm-classifier": (
        "an ADM noisy-image classifier",
        "genzoo.load_official_classifier('adm', ...)",
    ),
    "biggan": ("a BigGAN generator (ajbrock layout)", "genzoo.load_official('biggan', ...)"),
    "biggan-deep": (
        "a BigGAN-deep generator (Hugging Face port)",
        "genzoo.load_official('biggan-deep', ...)",
    ),
    "biggan-discriminator": (
        "a BigGAN discriminator (ajbrock layout)",
        "genzoo.families.gan.load_official_discriminator('biggan', ...)",
    ),
}

# Checkpoint entries that hold the network weights (training containers of the official code).
_CONTAINER_ENTRIES = ("model_ema", "ema", "model", "module", "state_dict", "trainer", "var_wo_ddp")


class _Keys:
    def __init__(self, keys: set[str]):
        self.keys = keys

    def has(self, *names: str) -> bool:
        return all(name in self.keys for name in names)

    def prefix(self, start: str, end: str = "") -> bool:
        return any(k.startswith(start) and k.endswith(end) for k in self.keys)


_RULES: list[tuple[str, Callable[[_Keys], bool]]] = [
    (
        "llamagen-t2i",
        lambda k: k.has("tok_embeddings.weight") and k.prefix("cls_embedding.cap_proj."),
    ),
    (
        "llamagen",
        lambda k: k.has("tok_embeddings.weight") and k.prefix("layers.", ".attention.wqkv.weight"),
    ),
    ("llamagen-vq", lambda k: k.prefix("encoder.conv_blocks.") or k.prefix("decoder.conv_blocks.")),
    ("var-vqvae", lambda k: k.has("quantize.ema_vocab_hit_SV") or k.prefix("quantize.quant_resi.")),
    ("maskgit-vqgan", lambda k: k.prefix("decoder.up.", ".upsample_conv.weight")),
    (
        "mar-kl16",
        lambda k: (
            k.has("quant_conv.weight") and k.prefix("encoder.down.") and not k.prefix("quantize.")
        ),
    ),
    ("rar", lambda k: k.has("target_aware_pos_embed") or k.has("timesteps_embeddings")),
    (
        "var",
        lambda k: k.has("pos_1LC") or k.has("lvl_embed.weight") or k.prefix("head_nm.ada_lin."),
    ),
    (
        "maskgit",
        lambda k: (
            k.has("model.embeddings.word_embeddings.weight")
            or (k.has("embeddings.weight", "lm_head.weight") and k.prefix("in_blocks."))
        ),
    ),
    (
        "mar",
        lambda k: k.has("diffloss.net.input_proj.weight") or k.has("fake_latent", "z_proj.weight"),
    ),
    (
        "uvit",
        lambda k: (
            k.has("patch_embed.proj.weight", "decoder_pred.weight") and k.prefix("in_blocks.")
        ),
    ),
    ("dit", lambda k: k.has("x_embedder.proj.weight") and k.prefix("t_embedder.mlp.")),
    (
        "adm-classifier",
        lambda k: k.has("input_blocks.0.0.weight") and not k.prefix("output_blocks."),
    ),
    ("adm", lambda k: k.has("input_blocks.0.0.weight") and k.prefix("output_blocks.")),
    ("biggan-deep", lambda k: k.has("generator.gen_z.weight") or k.prefix("generator.layers.")),
    ("biggan", lambda k: k.has("shared.weight", "output_layer.2.weight")),
    (
        "biggan-discriminator",
        lambda k: k.has("embed.weight", "linear.weight") and k.prefix("blocks.0.0.conv1."),
    ),
]


def _weights_of(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """The state dict inside an official training container (first matching entry), if any."""
    for _ in range(3):  # e.g. VAR: checkpoint["trainer"]["var_wo_ddp"]
        entry = next((e for e in _CONTAINER_ENTRIES if isinstance(state.get(e), Mapping)), None)
        if entry is None:
            break
        state = state[entry]
    return state


def guess_kind(state_dict: Mapping[str, Any]) -> str | None:
    """The official kind (a key of KINDS) whose characteristic keys `state_dict` has, or None.

    Training containers ("model", "ema", "model_ema", "module", "state_dict", VAR's "trainer")
    are looked into first.
    """
    keys = _Keys({str(k) for k in _weights_of(state_dict)})
    return next((kind for kind, rule in _RULES if rule(keys)), None)


def refuse_other_kind(state: Mapping[str, Any], expected: str, where: str, what: str) -> None:
    """GenzooError when `state` is recognisably the weights of another official model."""
    kind = guess_kind(state)
    if kind is not None and kind != expected:
        raise GenzooError(f"{where} does not hold {what}: it looks like {describe_kind(kind)}")


def describe_kind(kind: str) -> str:
    """'a VAR transformer (load it with genzoo.load_official('var', ...))'."""
    what, how = KINDS[kind]
    return f"{what} (load it with {how})"
