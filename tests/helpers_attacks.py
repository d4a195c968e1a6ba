"""Shared helpers of the strong-attack tests (APGD, Square, AutoAttack).

The attack package is loaded on its own (importlib, private module name, as
in ``test_attacks.py``) because it must not depend on the rest of crmt_mm.
"""
import importlib.util
import sys
from pathlib import Path

import torch
import torch.nn as nn

PKG = Path(__file__).resolve().parents[1] / 'crmt_mm' / 'attacks'


def load_attacks():
    """``crmt_mm.attacks`` loaded without ``crmt_mm``/mmengine."""
    name = '_crmt_mm_attacks_under_test'
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, PKG / '__init__.py', submodule_search_locations=[str(PKG)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


K = 5
V_SHAPE = (1, 3, 2, 6, 6)  # [N, C, T, H, W] after the batch
A_SHAPE = (1, 1, 8, 8)  # [N, 1, F, M]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1, 1)


class TinyAV(nn.Module):
    """Video [B, 1, 3, 2, 6, 6] and spectrogram [B, 1, 1, 8, 8] encoders
    (conv + ReLU + linear) with summed linear heads; no BatchNorm, so the
    per-sample outcomes cannot couple."""

    modalities = ('visual', 'audio')

    def __init__(self, hidden=8):
        super().__init__()
        self.visual = nn.Sequential(
            nn.Conv3d(3, 4, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool3d((1, 3, 3)), nn.Flatten(),
            nn.Linear(36, hidden), nn.ReLU(), nn.Linear(hidden, K))
        self.audio = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
            nn.Linear(hidden, K))

    def fused_logits(self, x, drop=()):
        v = self.visual(x['visual'].flatten(0, 1))
        a = self.audio(x['audio'].flatten(0, 1))
        return (0 if 'visual' in drop else v) + (0 if 'audio' in drop else a)


def tiny_av(seed=0):
    torch.manual_seed(seed)
    net = TinyAV()
    with torch.no_grad():
        for p in net.parameters():  # confident, visibly non-linear logits
            p.mul_(2.5)
    return net.eval()


def av_batch(net, n=24, seed=1, flipped=3):
    """Normalised inputs; labels = clean predictions but ``flipped``."""
    g = torch.Generator().manual_seed(seed)
    x = dict(visual=(torch.rand((n,) + V_SHAPE, generator=g) - MEAN) / STD,
             audio=torch.randn((n,) + A_SHAPE, generator=g))
    with torch.no_grad():
        y = net.fused_logits(x).argmax(1)
    y[:flipped] = (y[:flipped] + 1) % K
    return x, y


def accuracy(logits, y):
    return (logits.argmax(1) == y).float().mean().item()


def linear_with_known_distance(n=200, k=6, dim=40, seed=0, norm='L2'):
    """A model linear in ``'audio'`` whose every sample's minimal
    adversarial distance is exactly 1 (no clamp).

    ``z = W x_audio + r`` with ``r`` a per-sample offset carried by a second,
    unattacked modality ``'offset'``. For linear logits the distance to the
    boundary with class k is ``(z_y - z_k) / ||w_y - w_k||_q`` (q = 2 for
    L2, q = 1 for L∞, the dual norm); ``r`` is chosen so that the smallest
    of these over k != y is 1 for every sample.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, dim, generator=g)
    y = torch.randint(0, k, (n,), generator=g)
    x = torch.randn(n, 1, dim, generator=g)
    q = 2 if norm == 'L2' else 1
    c = (w[y][:, None, :] - w[None]).norm(p=q, dim=2)  # [n, k]
    ratio = 1 + torch.rand(n, k, generator=g) * 2  # distances in [1, 3]
    nearest = (y + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k
    ratio[torch.arange(n), nearest] = 1.0
    # margins z_y - z_k = c_k * ratio_k; pick z_y = 0.
    z = -(c * ratio)
    z[torch.arange(n), y] = 0.0
    offset = z - x[:, 0] @ w.T

    def forward(inputs, drop=()):
        return inputs['audio'][:, 0] @ w.T + inputs['offset']

    return forward, dict(audio=x, offset=offset), y
