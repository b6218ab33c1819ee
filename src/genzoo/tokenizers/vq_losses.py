"""The VQGAN training losses: pixel reconstruction, LPIPS perceptual distance, and a PatchGAN
adversary with hinge losses (taming-transformers / LlamaGen).

    generator      rec = w1·|x − x̂|₁ + w2·|x − x̂|²,  perceptual = LPIPS(x, x̂),
                   adversarial = λ · factor(step) · (−mean D(x̂))
    discriminator  factor(step) · ½ (mean relu(1 − D(x)) + mean relu(1 + D(x̂)))

factor(step) is 0 before `disc_start` and 1 from then on; λ is fixed (`disc_weight`, LlamaGen's
default) or, with the adaptive weight of taming-transformers, additionally scaled by
‖∇_L rec‖ / (‖∇_L adv‖ + 1e-4), L being the decoder's last layer, clamped to [0, 1e4].
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from genzoo.errors import GenzooError
from genzoo.nn.state_dicts import state_dict_problems

DISC_LOSSES = ("hinge", "vanilla")
GEN_LOSSES = ("hinge", "non-saturating")


# -- adversarial ------------------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """The pix2pix PatchGAN ("NLayerDiscriminator" of taming-transformers and LlamaGen).

    4×4 convolutions: stride 2 from `in_channels` to `ndf` with LeakyReLU(0.2); n_layers − 1
    more stride-2 ones, doubling the width up to 8·ndf, each with BatchNorm; one stride-1 with
    BatchNorm; a final stride-1 convolution to one logit per patch. Keys `main.{i}.*`.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        width = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last widening layer keeps the resolution
            layers += [
                nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, True),
            ]
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def non_saturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-logits_fake).mean()  # −log sigmoid(D(x̂))


def disc_loss_fn(name: str):
    if name not in DISC_LOSSES:
        raise GenzooError(f"disc_loss={name!r}: choose one of {', '.join(DISC_LOSSES)}")
    return hinge_d_loss if name == "hinge" else vanilla_d_loss


def gen_loss_fn(name: str):
    if name not in GEN_LOSSES:
        raise GenzooError(f"gen_loss={name!r}: choose one of {', '.join(GEN_LOSSES)}")
    return hinge_g_loss if name == "hinge" else non_saturating_g_loss


def disc_factor(step: int, disc_start: int) -> float:
    """1 once the adversary is on, else 0. `step` is 0-based; the official code counts the
    step being taken from 1 and switches on when that count reaches `disc_start`."""
    return 1.0 if step + 1 >= disc_start else 0.0


def adaptive_disc_weight(
    rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor
) -> torch.Tensor:
    """‖∇ rec‖ / (‖∇ adv‖ + 1e-4) at the decoder's last layer, clamped to [0, 1e4], detached."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    adv_grad = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)[0]
    weight = rec_grad.norm() / (adv_grad.norm() + 1e-4)
    return weight.clamp(0.0, 1e4).detach()


# -- perceptual -------------------------------------------------------------------------------

# torchvision's vgg16().features index of each conv, and the LPIPS slice holding it.
VGG_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
VGG_SLICE_ENDS = (4, 9, 16, 23, 30)  # slice k holds features[ends[k-1]:ends[k]]


def _slice_of(index: int) -> int:
    return next(k for k, end in enumerate(VGG_SLICE_ENDS, start=1) if index < end)


def lpips_vgg_state(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """VGG16 conv weights in any of the usual layouts → lpips' `net.slice{k}.{i}.*` keys.

    Accepted: torchvision's vgg16 state dict (`features.{i}.*`, the classifier is ignored), the
    features alone (`{i}.*`), or lpips' own (`net.slice{k}.{i}.*`, with or without `net.`).
    """
    out = {}
    for i in VGG_CONVS:
        k = _slice_of(i)
        for part in ("weight", "bias"):
            names = (f"features.{i}.{part}", f"{i}.{part}", f"net.slice{k}.{i}.{part}",
                     f"slice{k}.{i}.{part}")  # fmt: skip
            found = next((n for n in names if n in state), None)
            if found is None:
                raise GenzooError(
                    f"{where} does not hold VGG16 weights: no {names[0]!r} (nor {names[1]!r}, "
                    f"{names[2]!r}); pass torchvision's vgg16 weights file (vgg16-397923af.pth)"
                )
            out[f"net.slice{k}.{i}.{part}"] = state[found]
    return out


class PerceptualLoss(nn.Module):
    """LPIPS (VGG16 trunk, the linear heads shipped with the `lpips` package), frozen.

    Nothing is downloaded: the network is laid out without weights, the heads are read from the
    package and the trunk from `vgg_path` (torchvision's vgg16 weights). Without a path the trunk
    is randomly initialised, which only tests should do. Inputs are images in [-1, 1]; returns
    the mean distance.
    """

    def __init__(self, vgg_path: str | Path = "") -> None:
        super().__init__()
        try:
            import lpips
        except ImportError:
            raise GenzooError(
                "the perceptual loss needs the `lpips` package; install it with "
                "`pip install lpips` (its VGG16 weights are read from vgg_path, not downloaded)"
            ) from None
        # Layout only: building torchvision's VGG16 for real would also initialise (then drop)
        # its 100M-parameter classifier.
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore", UserWarning)  # torchvision's `pretrained` notice
            net = lpips.LPIPS(pretrained=False, net="vgg", pnet_rand=True, verbose=False)
        net.to_empty(device="cpu")
        tensors = dict(type(net.scaling_layer)().state_dict(prefix="scaling_layer."))
        heads = Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"
        for key, value in torch.load(heads, map_location="cpu", weights_only=True).items():
            tensors[key] = value  # "lin{k}.…", also registered as "lins.{k}.…"
            if key.startswith("lin") and key[3:4].isdigit():
                tensors[f"lins.{key[3]}{key[4:]}"] = value
        if vgg_path:
            from genzoo.zoo.official import read_state_dict

            tensors.update(lpips_vgg_state(read_state_dict(vgg_path), str(vgg_path)))
        else:
            warnings.warn(
                "LPIPS runs with a randomly initialised VGG16 trunk (no vgg_path given); the "
                "perceptual loss is then meaningless. Pass the path of torchvision's vgg16 weights",
                UserWarning,
                stacklevel=2,
            )
            tensors.update(random_vgg_trunk())
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        problems = state_dict_problems(expected, {k: tuple(v.shape) for k, v in tensors.items()})
        if problems:
            raise GenzooError(
                f"LPIPS weights ({vgg_path or 'random trunk'}) do not fit the lpips VGG network: "
                + "; ".join(problems)
                + ". For vgg_path pass torchvision's vgg16 weights (vgg16-397923af.pth)"
            )
        net.load_state_dict(tensors, strict=True)
        self.lpips = net
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # frozen: no dropout in the linear heads

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        return self.lpips(x.contiguous(), x_hat.contiguous()).mean()


def random_vgg_trunk() -> dict[str, torch.Tensor]:
    """VGG16 conv weights initialised as torchvision does (He normal, fan-out; zero bias)."""
    out, width = {}, 3
    for i, channels in zip(VGG_CONVS, VGG_WIDTHS, strict=True):
        k = _slice_of(i)
        weight = torch.empty(channels, width, 3, 3)
        nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")
        out[f"net.slice{k}.{i}.weight"], out[f"net.slice{k}.{i}.bias"] = (
            weight,
            torch.zeros(channels),
        )
        width = channels
    return out


def reconstruction_losses(x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean absolute and mean squared pixel error."""
    return {"rec_l1": F.l1_loss(x_hat, x), "rec_l2": F.mse_loss(x_hat, x)}
