"""Maths of the fusion heads and the step-1 losses."""
import math

import pytest
import torch

from crmt_mm.models.heads import (ConcatHead, CRMTHead, center_unit_rows,
                                  orthonormal_rows)
from crmt_mm.models.losses import CRMTMarginLoss, margin_regularizer


@pytest.mark.parametrize('k,d', [(10, 64), (31, 512), (2, 3)])
def test_orthonormal_rows_are_orthonormal(k, d):
    torch.manual_seed(0)
    w = torch.nn.Linear(d * 2, k).weight[:, :d].detach()
    wn = orthonormal_rows(w)
    assert wn.dtype == torch.float32
    err = (wn @ wn.T - torch.eye(k)).abs().max()
    assert err < 1e-4
    assert wn.mean(dim=1).abs().max() < 1e-5  # rows stay centred


def test_orthonormal_rows_gradcheck_generic_and_degenerate():
    torch.manual_seed(0)
    w = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(orthonormal_rows, (w,))
    # Already orthonormal rows: all Gram eigenvalues equal, where a plain
    # eigh backward divides by zero gaps. The gradient must stay exact.
    q = torch.linalg.qr(torch.randn(7, 7, dtype=torch.float64))[0]
    centred = q[:, :4].T - q[:, :4].T.mean(1, keepdim=True)
    base = torch.linalg.qr(centred.T)[0].T.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(orthonormal_rows, (base,))
    out = orthonormal_rows(base)
    grad, = torch.autograd.grad(out.sum(), base)
    assert torch.isfinite(grad).all()


def test_orthonormal_needs_enough_features():
    with pytest.raises(ValueError, match='num_classes'):
        orthonormal_rows(torch.randn(8, 8))
    with pytest.raises(ValueError, match='center_unit'):
        CRMTHead(num_classes=8, in_channels=dict(a=8, b=16))


def test_center_unit_rows():
    w = torch.randn(5, 12)
    wn = center_unit_rows(w)
    assert torch.allclose(wn.norm(dim=1), torch.ones(5), atol=1e-6)
    assert wn.mean(dim=1).abs().max() < 1e-6
    off = (wn @ wn.T - torch.eye(5)).abs().max()
    assert off > 1e-3  # unit-norm but not orthogonal


def test_heads_share_interface_and_feature_drop():
    torch.manual_seed(0)
    feats = dict(visual=torch.randn(4, 16), audio=torch.randn(4, 8))
    for head in (CRMTHead(5, dict(visual=16, audio=8)),
                 ConcatHead(5, dict(visual=16, audio=8))):
        z = head.unimodal_logits(feats)
        a = head.integration_weights()
        expected = a[0] * z['visual'] + a[1] * z['audio'] + head.bias
        assert torch.allclose(head.fuse(z), expected, atol=1e-6)
        # dropping a modality == zeroing its features
        zero = dict(feats, audio=torch.zeros(4, 8))
        assert torch.allclose(head.fuse(z, drop=('audio',)),
                              head.fuse(head.unimodal_logits(zero)),
                              atol=1e-6)
        with pytest.raises(KeyError, match='flow'):
            head.fuse(z, drop=('flow',))
    concat = ConcatHead(5, dict(visual=16, audio=8))
    joint = concat.fc(torch.cat([feats['visual'], feats['audio']], 1))
    assert torch.allclose(concat.fuse(concat.unimodal_logits(feats)), joint,
                          atol=1e-5)


def naive_margin(z, y, floor):
    m, b, k = z.shape
    out = []
    for i in range(b):
        total = floor
        for mm in range(m):
            for kk in range(k):
                if kk != y[i]:
                    total += math.exp(z[mm, i, kk] - z[mm, i, y[i]])
        out.append(math.log(total))
    return torch.tensor(out, dtype=z.dtype)


def test_margin_matches_naive_and_stays_finite():
    torch.manual_seed(0)
    z = torch.randn(2, 6, 5, dtype=torch.float64) * 3
    y = torch.randint(0, 5, (6,))
    excluded = torch.nn.functional.one_hot(y, 5).bool()
    target = z.gather(2, y[None, :, None].expand(2, -1, 1)).squeeze(2)
    for floor in (1e-5, 0.0, 1.0):
        ours = margin_regularizer(z, target, excluded, floor)
        assert torch.allclose(ours, naive_margin(z, y, floor), atol=1e-10)
    # overflow regime: naive exp(1000) is inf, ours is finite and exact
    big = torch.zeros(2, 1, 3)
    big[0, 0, 1] = 1000.0
    t = big.gather(2, torch.zeros(2, 1, 1, dtype=torch.long)).squeeze(2)
    ex = torch.tensor([[True, False, False]])
    value = margin_regularizer(big, t, ex, 1e-5)
    assert torch.isfinite(value).all()
    assert abs(value.item() - 1000.0) < 1e-3
    assert torch.isinf(torch.exp(torch.tensor(1000.0)))
    # the floor bounds the term below by log(delta)
    neg = -1e4 * torch.ones(2, 1, 3)
    neg[:, 0, 0] = 0
    t0 = torch.zeros(2, 1)
    assert torch.allclose(margin_regularizer(neg, t0, ex, 1e-5),
                          torch.tensor([math.log(1e-5)]))


def test_mix_margin_is_the_intended_formula():
    torch.manual_seed(1)
    z = torch.randn(2, 4, 6, dtype=torch.float64)
    fused = torch.randn(4, 6, dtype=torch.float64)
    ya = torch.tensor([0, 1, 2, 3])
    yb = torch.tensor([1, 1, 5, 0])
    lam = 0.3
    loss = CRMTMarginLoss(rho=1.0)
    got = loss(z, fused, ya, yb, lam)['loss_margin']
    expected = []
    for i in range(4):
        total = 1e-5
        for m in range(2):
            ref = lam * z[m, i, ya[i]] + (1 - lam) * z[m, i, yb[i]]
            for k in range(6):
                if k not in (ya[i].item(), yb[i].item()):
                    total += math.exp(z[m, i, k] - ref)
        expected.append(math.log(total))
    assert torch.allclose(got, torch.tensor(expected).mean().double())
    # same targets: reduces to the plain margin
    same = loss(z, fused, ya, ya, lam)['loss_margin']
    plain = CRMTMarginLoss(rho=1.0)(z, fused, ya)['loss_margin']
    assert torch.allclose(same, plain)


def test_loss_parts_and_rho_zero():
    z = torch.randn(2, 3, 4)
    fused = torch.randn(3, 4)
    y = torch.tensor([0, 1, 3])
    out = CRMTMarginLoss(rho=2.0)(z, fused, y)
    assert torch.allclose(out['loss_cls'],
                          torch.nn.functional.cross_entropy(fused, y))
    assert set(CRMTMarginLoss(rho=0)(z, fused, y)) == {'loss_cls'}


@pytest.mark.parametrize('kwargs,match', [
    (dict(variant='XT'), 'variant'), (dict(rho=-1), 'rho'),
    (dict(at_eps=-0.1), 'at_eps'), (dict(at_steps=0), 'at_steps'),
    (dict(margin_floor=-1), 'margin_floor'), (dict(at_bn='x'), 'at_bn'),
    (dict(mix_alpha=0), 'mix_alpha')])
def test_loss_rejects_bad_hyper_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CRMTMarginLoss(**kwargs)
