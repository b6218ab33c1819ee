"""Classifier-free guidance as a predictor transform."""

import pytest
import torch

from genzoo.errors import GenzooError
from genzoo.sampling import ClassifierFreeGuidance

NULL = 9


class LabelNet:
    """A closed-form predictor whose output depends on x, t and y, recording every call."""

    def __init__(self, out_channels: int):
        self.out_channels = out_channels
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((x.clone(), t.clone(), y.clone()))
        k = torch.arange(self.out_channels, dtype=x.dtype).view(1, -1, 1, 1)
        base = x.repeat(1, self.out_channels // x.shape[1], 1, 1)
        return base * (1 + k) + (y.to(x.dtype) * 0.1 + t.to(x.dtype)).view(-1, 1, 1, 1) * (k - 1)


def separate(net, x, t, y, scale, k):
    """Guidance computed from two separate passes (the definition)."""
    cond, uncond = net(x, t, y), net(x, t, torch.full_like(y, NULL))
    guided = uncond[:, :k] + scale * (cond[:, :k] - uncond[:, :k])
    return torch.cat([guided, cond[:, k:]], 1)


def inputs(n=3, c=4):
    torch.manual_seed(0)
    return torch.randn(n, c, 2, 2), torch.rand(n), torch.tensor([1, 5, 7])[:n]


def test_scale_one_is_the_plain_predictor():
    net = LabelNet(4)
    x, t, y = inputs()
    out = ClassifierFreeGuidance(1.0).wrap(net, NULL)(x, t, y)
    assert len(net.calls) == 1 and net.calls[0][0].shape[0] == 3
    assert torch.equal(out, LabelNet(4)(x, t, y))
    # Without guidance no null label is needed.
    assert torch.equal(ClassifierFreeGuidance(1.0).wrap(net, None)(x, t, y), out)


def test_one_forward_on_the_doubled_batch():
    net = LabelNet(4)
    x, t, y = inputs()
    ClassifierFreeGuidance(3.0).wrap(net, NULL)(x, t, y)
    assert len(net.calls) == 1
    bx, bt, by = net.calls[0]
    assert bx.shape[0] == 6
    assert torch.equal(bx, torch.cat([x, x])) and torch.equal(bt, torch.cat([t, t]))
    assert torch.equal(by, torch.tensor([1, 5, 7, NULL, NULL, NULL]))


def test_all_data_channels_are_guided_by_default():
    x, t, y = inputs()
    out = ClassifierFreeGuidance(2.5).wrap(LabelNet(4), NULL)(x, t, y)
    torch.testing.assert_close(out, separate(LabelNet(4), x, t, y, 2.5, 4))
    assert not torch.allclose(out, LabelNet(4)(x, t, y))


def test_learned_variance_channels_come_from_the_conditional_half():
    x, t, y = inputs()
    out = ClassifierFreeGuidance(2.5).wrap(LabelNet(8), NULL)(x, t, y)
    expected = separate(LabelNet(8), x, t, y, 2.5, 4)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out[:, 4:], LabelNet(8)(x, t, y)[:, 4:])


def test_three_channels_like_the_official_dit():
    x, t, y = inputs()
    out = ClassifierFreeGuidance(4.0, channels=3).wrap(LabelNet(4), NULL)(x, t, y)
    cond = LabelNet(4)(x, t, y)
    torch.testing.assert_close(out, separate(LabelNet(4), x, t, y, 4.0, 3))
    assert torch.equal(out[:, 3], cond[:, 3])
    assert not torch.allclose(out[:, :3], cond[:, :3])


def test_interval_switches_guidance_off_outside():
    guidance = ClassifierFreeGuidance(3.0, interval=(0.2, 0.6))
    x, _, y = inputs()

    def run(level):
        net = LabelNet(4)
        t = torch.full((3,), level)
        out = guidance.wrap(net, NULL, noise_level=lambda t: t)(x, t, y)
        return net, t, out

    for level in (0.1, 0.7):  # outside: the conditional prediction, from one pass of size N
        net, t, out = run(level)
        assert [c[0].shape[0] for c in net.calls] == [3]
        assert torch.equal(out, LabelNet(4)(x, t, y))
    for level in (0.2, 0.4, 0.6):  # inside (ends included): guided
        net, t, out = run(level)
        assert [c[0].shape[0] for c in net.calls] == [6]
        torch.testing.assert_close(out, separate(LabelNet(4), x, t, y, 3.0, 4))


def test_interval_per_sample_noise_levels():
    x, _, y = inputs()
    t = torch.tensor([0.1, 0.5, 0.9])
    guided = ClassifierFreeGuidance(3.0, interval=(0.2, 0.6)).wrap(LabelNet(4), NULL, lambda t: t)
    out = guided(x, t, y)
    cond = LabelNet(4)(x, t, y)
    full = separate(LabelNet(4), x, t, y, 3.0, 4)
    torch.testing.assert_close(out[[0, 2]], cond[[0, 2]])
    torch.testing.assert_close(out[1], full[1])


def test_flow_noise_level_direction():
    """A flow's t = 0 is noise: guidance limited to high noise applies near t = 0."""
    from genzoo.families.flow import Flow

    assert Flow.noise_level(torch.tensor(0.0)) == 1.0 and Flow.noise_level(torch.tensor(1.0)) == 0.0


def test_guidance_errors():
    x, t, y = inputs()
    with pytest.raises(GenzooError, match="null"):
        ClassifierFreeGuidance(2.0).wrap(LabelNet(4), None)
    with pytest.raises(GenzooError, match="cfg_interval"):
        ClassifierFreeGuidance(2.0, interval=(0.8, 0.2))
    with pytest.raises(GenzooError, match="cfg_channels"):
        ClassifierFreeGuidance(2.0, channels=0)
