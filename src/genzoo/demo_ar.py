"""`genzoo demo --family ar`: the token route on the embedded data, end to end on CPU.

Trains a tiny VQ tokenizer (stride 4: 8×8 codes of 256 entries at 32×32) on `shapes:centred`,
caches the token ids of every image and its mirror image, trains `llamagen-tiny` on them (raster
order, class token with label dropout), and hands the run to the demo's report: grid, ADM npz,
FD in dataset-classifier features, share of samples recognised as their class.
"""

from __future__ import annotations

from pathlib import Path

from genzoo.demo import DEMO_BATCH, DEMO_DATA, DEMO_RES, DemoRecipe

GPT_STEPS = 1200
VQ_STEPS = 400  # scaled with --steps: vq_steps = steps · VQ_STEPS / GPT_STEPS
TOKEN_IMAGES = 4000  # images (each also mirrored) whose ids the GPT trains on, at most
SAMPLE_OPTIONS = {"cfg": 2.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def _config(name: str, overrides: list[str], quiet: bool):
    from genzoo.config import apply_overrides
    from genzoo.zoo.presets import preset

    cfg = apply_overrides(preset(name), overrides)
    cfg.train.quiet = quiet
    return cfg


def train_ar(out: Path, steps: int | None, device: str, quiet: bool) -> Path:
    from genzoo.data.latents import encode_dataset
    from genzoo.data.shapes import ShapesDataset
    from genzoo.tokenizers import build_tokenizer
    from genzoo.train.loop import train

    gpt_steps = steps or GPT_STEPS
    vq_steps = max(2, gpt_steps * VQ_STEPS // GPT_STEPS)
    common = [f"data.spec={DEMO_DATA}", f"data.res={DEMO_RES}", f"train.batch_size={DEMO_BATCH}"]
    vq = _config(
        "vq16-tiny",
        [
            *common,
            f"train.steps={vq_steps}",
            "family.perceptual_weight=0",  # LPIPS needs VGG weights from a file; none here
            f"family.disc_start={vq_steps + 1}",  # plain reconstruction at this budget
            "train.ema_decay=0.99",
            f"train.ckpt_every={max(vq_steps // 2, 1)}",
        ],
        quiet,
    )
    vq_run = train(vq, out / "vq", device=device)
    pose = DEMO_DATA.partition(":")[2] or "random"
    count = min(TOKEN_IMAGES, gpt_steps * DEMO_BATCH)  # no more than the GPT will see
    data = ShapesDataset(DEMO_RES, train=True, seed=0, pose=pose, length=count)
    tokens = encode_dataset(
        data, build_tokenizer(f"vq:{vq_run}"), out / "tokens", device=device, progress=not quiet
    )
    gpt = _config(
        "llamagen-tiny",
        [
            *common,
            f"data.spec=tokens:{tokens}",
            f"train.steps={gpt_steps}",
            "train.warmup=100",
            "train.ema_decay=0.995",  # a short run: the average must not lag far behind
            "train.ema_warmup=true",
            f"train.ckpt_every={max(gpt_steps // 4, 1)}",
            f"train.grid_cfg={SAMPLE_OPTIONS['cfg']}",
        ],
        quiet,
    )
    return train(gpt, out / "run", device=device)


AR = DemoRecipe("a VQ tokenizer, then llamagen-tiny on its tokens (ar family)", train_ar,
                SAMPLE_OPTIONS)  # fmt: skip
