"""Metrics of the EMA model during training (`--eval-every N --eval-num K --eval-ref REF`)."""

from __future__ import annotations

from genzoo.config import TrainConfig
from genzoo.errors import GenzooError
from genzoo.generate import make_labels


def evaluate_samples(pipe, t: TrainConfig, batch_size: int = 64, **options) -> dict[str, float]:
    from genzoo.metrics import evaluate

    if not t.eval_ref:
        raise GenzooError("--eval-every needs --eval-ref REF (a reference npz or statistics file)")
    labels = make_labels(t.eval_num, pipe.num_classes, None, seed=t.seed)

    def batches():
        for s in range(0, len(labels), batch_size):
            yield pipe.sample(
                labels[s : s + batch_size],
                indices=range(s, min(s + batch_size, len(labels))),
                seed=t.seed,
                **options,
            )

    metrics = [m.strip() for m in t.eval_metrics.split(",") if m.strip()]
    result = evaluate(batches(), t.eval_ref, metrics, device=str(pipe.device), progress=False)
    return {f"eval/{k}": float(v) for k, v in result.items() if isinstance(v, int | float)}
