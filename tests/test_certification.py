"""Certified radius and Lipschitz estimates, tested as maths."""
import math

import pytest
import torch
from mmaction.registry import MODELS

import crmt_mm  # noqa: F401
from crmt_mm.attacks import MultiModalPGD, UniModalPGD
from crmt_mm.certification import (certified_radius, estimate_tau,
                                   modality_radii)


def brute_force_radius(z, a, b, tau, y, use_abs=True):
    m_count, batch, k_count = z.shape
    out = []
    for i in range(batch):
        h = [sum(a[m, k] * z[m, i, k] for m in range(m_count)) + b[k]
             for k in range(k_count)]
        best = math.inf
        for k in range(k_count):
            if k == y[i]:
                continue
            w = (lambda v: abs(v)) if use_abs else (lambda v: v)
            den = math.sqrt(sum(
                (w(a[m, y[i]]) * tau[m, y[i]] + w(a[m, k]) * tau[m, k]) ** 2
                for m in range(m_count)))
            best = min(best, (h[y[i]] - h[k]) / den)
        out.append(best)
    return torch.tensor(out, dtype=torch.float64)


def random_problem(seed, m=3, b=7, k=5):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(m, b, k, generator=g, dtype=torch.float64)
    a = torch.randn(m, k, generator=g, dtype=torch.float64)
    bias = torch.randn(k, generator=g, dtype=torch.float64)
    tau = torch.rand(m, k, generator=g, dtype=torch.float64) + 0.1
    y = torch.randint(0, k, (b,), generator=g)
    return z, a, bias, tau, y


@pytest.mark.parametrize('seed', range(5))
def test_radius_matches_brute_force(seed):
    z, a, b, tau, y = random_problem(seed)
    for use_abs in (True, False):
        ours = certified_radius(z, a, b, tau, y, abs_weights=use_abs)
        ref = brute_force_radius(z, a, b, tau, y, use_abs)
        assert torch.allclose(ours, ref, atol=1e-12)
    # sign: positive exactly for correctly classified samples
    h = (a[:, None] * z).sum(0) + b
    correct = h.argmax(1) == y
    r = certified_radius(z, a, b, tau, y)
    assert torch.equal(r > 0, correct)


def test_runner_up_is_not_below_min_and_modality_radii_bound_joint():
    z, a, b, tau, y = random_problem(7, b=50)
    r_min = certified_radius(z, a, b, tau, y)
    r_ru = certified_radius(z, a, b, tau, y, competitor='runner_up')
    assert (r_ru >= r_min - 1e-12).all()
    per = modality_radii(z, a, b, tau, y)
    correct = r_min > 0
    assert (r_min[correct] <= per.min(0).values[correct] + 1e-12).all()
    with pytest.raises(ValueError, match='competitor'):
        certified_radius(z, a, b, tau, y, competitor='max')


def test_zero_slope_gives_infinite_radius():
    z = torch.tensor([[[2.0, 1.0]], [[0.0, 0.0]]])
    r = certified_radius(z, torch.ones(2, 2), torch.zeros(2),
                         torch.zeros(2, 2), torch.tensor([0]))
    assert torch.isinf(r).all() and (r > 0).all()


def linear_model(num_classes=4, seed=0):
    """CRMT model whose encoders are linear maps: tau is exact there."""
    torch.manual_seed(seed)
    enc = lambda c, hw, d: dict(  # noqa: E731
        input_key=f'in_{c}', feat_dim=d, input_shape=(c, *hw),
        backbone=dict(type='ConvEncoder', in_channels=c, input_size=hw,
                      channels=(), feat_dim=d))
    model = MODELS.build(dict(
        type='CRMTRecognizer',
        encoders=dict(visual=enc(3, (4, 4), 12), audio=enc(1, (6, 6), 10)),
        head=dict(type='CRMTHead', num_classes=num_classes)))
    with torch.no_grad():
        model.head.integration.uniform_(0.2, 1.5)
        model.head.fc.bias.normal_()
    return model.eval()


def random_inputs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(visual=torch.randn(n, 1, 3, 4, 4, generator=g),
                audio=torch.randn(n, 1, 1, 6, 6, generator=g))


def analytic_tau(model):
    rows = []
    for m, encoder in model.encoders.items():
        jac = encoder.backbone.fc.weight  # [D, C*H*W]
        w = model.head.class_weights()[m]  # [K, D]
        rows.append((w @ jac).norm(dim=1))
    return torch.stack(rows)


def test_tau_from_autograd_equals_analytic_lipschitz_constant():
    model = linear_model()
    batches = [random_inputs(8, s) for s in range(3)]
    result = estimate_tau(model.modality_logits, batches, model.modalities,
                          model.num_classes)
    assert result['num_samples'] == 24
    assert torch.allclose(result['tau'], analytic_tau(model).detach(),
                          rtol=1e-5)
    for p in model.parameters():
        assert p.grad is None  # gradients w.r.t. inputs only


@pytest.mark.parametrize('seed', range(3))
def test_no_attack_inside_certified_radius_flips_prediction(seed):
    model = linear_model(seed=seed)
    with torch.no_grad():
        model.tau.copy_(analytic_tau(model))
    x = random_inputs(64, seed)
    with torch.no_grad():
        y = model.fused_logits(x).argmax(1)  # certify the predictions
        r = model.certified_radius(x, y)
        z = torch.stack(list(model.modality_logits(x).values()))
        per = modality_radii(z, model.integration_weights(), model.bias,
                             model.tau, y)
    assert (r > 0).all()
    # strongest first-order attacks at 99.9 % of each sample's radius
    for index in range(64):
        xi = {m: v[index:index + 1] for m, v in x.items()}
        yi = y[index:index + 1]
        eps = 0.999 * r[index].item()
        attacks = [MultiModalPGD(eps=eps, steps=20, step_size=eps / 5)]
        attacks += [UniModalPGD(m, eps=0.999 * per[j, index].item(), steps=20,
                                step_size=per[j, index].item() / 5)
                    for j, m in enumerate(model.modalities)]
        for attack in attacks:
            adv = attack.perturb(model.fused_logits, xi, yi)
            assert model.fused_logits(adv).argmax(1).item() == yi.item()
    # random directions as well
    g = torch.Generator().manual_seed(seed)
    for _ in range(20):
        noise = {m: torch.randn(v.shape, generator=g) for m, v in x.items()}
        norm = sum(n.flatten(1).pow(2).sum(1) for n in noise.values()).sqrt()
        scale = 0.999 * r / norm
        moved = {m: x[m] + noise[m] * scale.view(-1, 1, 1, 1, 1)
                 for m in x}
        assert torch.equal(model.fused_logits(moved).argmax(1), y)
    # and the bound is not vacuous: a large enough attack does flip some
    big = MultiModalPGD(eps=float(r.max()) * 4, steps=20)
    adv = big.perturb(model.fused_logits, x, y)
    assert (model.fused_logits(adv).argmax(1) != y).any()


def test_radius_gradient_is_finite_when_weights_hit_zero():
    z, a, b, tau, y = random_problem(3)
    a = a.abs()
    a[:, :2] = 0  # classes 0 and 1 lost every modality (clamped to 0)
    a.requires_grad_(True)
    r = certified_radius(z, a, b, tau, y)
    grad, = torch.autograd.grad(r[~torch.isinf(r)].sum(), a)
    assert torch.isfinite(grad).all()
