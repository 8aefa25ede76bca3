"""_torch_nets.py: test helper: an odd-sized torch module, its batches, and the comparison with torch.optim."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

RTOL = {torch.float32: 2e-4, torch.float64: 1e-10}


class Net(nn.Module):
    """Embedding, LayerNorm, a channels_last Conv2d and Linear layers: odd sizes everywhere."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(13, 7)
        self.norm = nn.LayerNorm(7)
        self.conv = nn.Conv2d(3, 5, 3)
        self.head = nn.Linear(7 + 5, 3)
        self.extra = nn.Linear(3, 3)  # gets no grad on some steps

    def forward(self, tokens, images, use_extra=True):
        e = self.norm(self.emb(tokens)).mean(dim=1)
        c = self.conv(images).mean(dim=(2, 3))
        out = self.head(torch.cat([e, c], dim=1))
        return self.extra(out) if use_extra else out


def make_net(dtype, seed=0):
    torch.manual_seed(seed)
    net = Net().to(dtype)
    net.conv.to(memory_format=torch.channels_last)
    assert not net.conv.weight.is_contiguous() and net.conv.weight.is_contiguous(memory_format=torch.channels_last)
    return net


def batch(k, dtype):
    gen = torch.Generator().manual_seed(1000 + k)
    tokens = torch.randint(0, 13, (5, 4), generator=gen)
    images = torch.randn(5, 3, 6, 6, generator=gen, dtype=dtype).to(memory_format=torch.channels_last)
    target = torch.randn(5, 3, generator=gen, dtype=dtype)
    return tokens, images, target


def train_step(net, opt, k, dtype, scheduler=None):
    tokens, images, target = batch(k, dtype)
    opt.zero_grad()
    loss = ((net(tokens, images, use_extra=k % 5 != 2) - target) ** 2).mean()
    loss.backward()
    opt.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()


def assert_close(actual, expected, rtol, what):
    """|actual - expected| <= rtol * max(|expected|, the tensor's magnitude), elementwise."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    assert actual.stride() == expected.stride() or actual.numel() <= 1, f"{what}: layout differs"
    if actual.numel() == 0:
        return
    a, e = actual.detach().double().numpy(), expected.detach().double().numpy()
    scale = float(np.max(np.abs(e))) or 1e-300
    np.testing.assert_allclose(a, e, rtol=rtol, atol=rtol * scale, err_msg=what)


def compare(ours_net, ours, ref_net, ref, rtol, when):
    for (name, p), q in zip(ours_net.named_parameters(), ref_net.parameters()):
        assert_close(p, q, rtol, f"{name} {when}")
        mine, theirs = ours.state.get(p, {}), ref.state.get(q, {})
        assert set(mine) == set(theirs), f"state keys of {name} {when}"
        for key, value in theirs.items():
            if key == "step":
                # float32 as adam_c creates it, or float64 as loaded from torch under a float64 default dtype
                assert mine["step"].dtype in (torch.float32, value.dtype) and mine["step"].dim() == 0
                assert mine["step"].item() == value.item(), f"step of {name} {when}"
            else:
                assert_close(mine[key], value, rtol, f"{key} of {name} {when}")
