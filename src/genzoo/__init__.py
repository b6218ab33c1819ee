"""genzoo: train, sample and evaluate class-conditional image generators.

import genzoo
pipe = genzoo.load("runs/my-dit")                                  # a genzoo run
pipe = genzoo.load_official("dit", "DiT-XL-2-256x256.pt", vae=PATH)  # published weights
images = pipe.sample(labels, sampler="ddpm", steps=250, cfg=1.5, seed=0)  # uint8 NHWC
scores = genzoo.evaluate("samples.npz", "VIRTUAL_imagenet256_labeled.npz", ["fid", "is"])
"""

__version__ = "0.1.0"

__all__ = ["load", "load_official", "load_official_tokenizer", "evaluate", "Pipeline", "train"]


def __getattr__(name: str):
    # Lazy: `import genzoo` stays cheap, and each entry point pulls in only what it needs.
    if name in ("load", "Pipeline"):
        from genzoo import pipeline

        return getattr(pipeline, name)
    if name in ("load_official", "load_official_tokenizer"):
        from genzoo.zoo import load_official

        return getattr(load_official, name)
    if name == "evaluate":
        from genzoo.metrics import evaluate

        return evaluate
    if name == "train":
        from genzoo.train.loop import train

        return train
    raise AttributeError(f"module 'genzoo' has no attribute {name!r}")
