"""Finding feature-extractor weights: explicit path, environment variable, torch hub cache, URL.

Evaluation machines are often offline, so every failure says exactly which file to fetch and
where to put it. Whatever file is used, its sha256 goes into the evaluation record.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import torch

from genzoo.errors import GenzooError
from genzoo.nn.state_dicts import shapes_of, state_dict_problems


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub (and torch-fidelity) cache a download of `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def resolve_weights(
    explicit: str | Path | None,
    *,
    env_var: str,
    url: str,
    what: str,
    option: str,
    allow_download: bool = True,
) -> Path:
    """Path of a weights file: `explicit`, else $env_var, else the hub cache, else download."""
    how_to = (
        f"Download {url} on a machine with internet access and either put it at "
        f"{hub_checkpoint_path(url)}, pass {option} PATH, or set {env_var}=PATH"
    )
    for source, value in (("argument", explicit), (f"${env_var}", os.environ.get(env_var))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise GenzooError(f"{what} weights from {source}: no such file {path}. {how_to}")
            return path
    cached = hub_checkpoint_path(url)
    if cached.is_file():
        return cached
    if not allow_download:
        raise GenzooError(f"{what} weights not found offline. {how_to}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=False)
    except Exception as e:  # any network failure: offline, proxy, DNS, HTTP error
        raise GenzooError(f"could not download {what} weights ({e}). {how_to}") from e
    return cached


def load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A plain tensor state dict (weights_only: no code from the file runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise GenzooError(
            f"{path}: cannot be read as {what} weights ({type(e).__name__}: {e}); expected a "
            "PyTorch state dict (.pth)"
        ) from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise GenzooError(f"{path}: not a state dict of tensors, so not {what} weights")
    return state


def check_state_dict(
    state: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    path: Path,
    what: str,
    optional: tuple[str, ...] = ("num_batches_tracked",),
) -> None:
    """Raise a clear error when `state` does not have the architecture of `expected`."""
    problems = state_dict_problems(shapes_of(expected), shapes_of(state), optional=optional)
    if problems:
        raise GenzooError(
            f"{path}: not {what} weights. Is this the right file?\n  " + "\n  ".join(problems)
        )


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (memoised per path, size and modification time)."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
