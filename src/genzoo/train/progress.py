"""Training progress bar: step, loss, img/s and ETA (tqdm on stderr; `--quiet` turns it off)."""

from __future__ import annotations

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, start: int, enabled: bool = True):
        self.rate: float | None = None  # smoothed img/s
        self.bar = (
            tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
            if enabled
            else None
        )

    def update(self, step: int, loss: float, img_per_s: float | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(step - self.bar.n)
        post = {"loss": f"{loss:.4f}"}
        if img_per_s is not None:
            self.rate = img_per_s if self.rate is None else 0.9 * self.rate + 0.1 * img_per_s
            post["img/s"] = f"{self.rate:.1f}"
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
