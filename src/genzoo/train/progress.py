"""Training progress bar: step, loss, img/s and ETA (tqdm on stderr; `--quiet` turns it off)."""

from __future__ import annotations

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, start: int, enabled: bool = True, batch_size: int = 0):
        self.batch_size = batch_size
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
            post["img/s"] = f"{img_per_s:.1f}"
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
