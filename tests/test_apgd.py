"""APGD over modality dicts: torchattacks agreement, active test, losses.

The attack package is loaded on its own (see ``helpers_attacks``).
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from helpers_attacks import (linear_with_known_distance, load_attacks,
                             tiny_av, av_batch)

A = load_attacks()


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny ops on 2 shared cores: thread sync costs 100x the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---- losses against hand-computed values ------------------------------------


def test_dlr_losses_by_hand():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.0, -2.0],
                      [0.5, 2.0, 1.0, 1.5, 0.0]])
    y = torch.tensor([0, 2])
    # sample 0: z_y = 4, best other 3, sorted 4, 3, 1, 0 -> -(4-3)/(4-1)
    # sample 1: z_y = 1, best other 2, sorted 2, 1.5, 1, 0.5 -> -(1-2)/(2-1)
    assert torch.allclose(A.losses.dlr_loss(z, y),
                          torch.tensor([-1 / 3, 1.0]))
    t = torch.tensor([3, 4])
    # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    # sample 0: -(4 - 0) / (4 - (1 + 0) / 2) = -4 / 3.5
    # sample 1: -(1 - 0) / (2 - (1 + 0.5) / 2) = -1 / 1.25
    assert torch.allclose(A.losses.targeted_dlr_loss(z, y, t),
                          torch.tensor([-4 / 3.5, -1 / 1.25]))
    assert torch.allclose(A.losses.margin(z, y), torch.tensor([1.0, -1.0]))
    assert torch.allclose(A.losses.ce_loss(z, y),
                          F.cross_entropy(z, y, reduction='none'))
    # invariant to shifting and scaling the logits
    assert torch.allclose(A.losses.dlr_loss(3 * z + 7, y),
                          A.losses.dlr_loss(z, y))
    assert A.losses.top_targets(z, y, 2).tolist() == [[2, 1], [1, 3]]
    with pytest.raises(ValueError, match='>= 3 classes'):
        A.losses.dlr_loss(z[:, :2], y * 0)
    with pytest.raises(ValueError, match='>= 4 classes'):
        A.losses.targeted_dlr_loss(z[:, :3], y * 0, y * 0 + 1)


def test_checkpoints_follow_the_schedule():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (increments shrink by
    # .03 down to .06)
    assert A.apgd.checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert A.apgd.checkpoints(10) == [3, 5, 6, 7, 8, 9, 10]
    assert A.apgd.checkpoints(1) == [1]


# ---- agreement with torchattacks on a small trained model -------------------


class _Digits(nn.Module):
    """Tiny conv net on 8x8 digit images in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, img):
        return self.net(img)


@pytest.fixture(scope='module')
def digits():
    datasets = pytest.importorskip('sklearn.datasets')
    data = datasets.load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    net = _Digits()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(12):  # ~97% test accuracy in about a second
        perm = torch.randperm(1300)
        for i in range(0, 1300, 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net, x[1300:1700], y[1300:1700]


@pytest.mark.parametrize('norm,eps', [('L2', 0.8), ('Linf', 0.08)])
@pytest.mark.parametrize('targeted', [False, True], ids=['ce', 'targeted'])
def test_apgd_matches_torchattacks(digits, norm, eps, targeted):
    torchattacks = pytest.importorskip('torchattacks')
    net, x, y = digits
    if targeted:
        ref_atk = torchattacks.APGDT(net, norm=norm, eps=eps, steps=25,
                                     n_restarts=1, seed=0, n_classes=10)
    else:
        ref_atk = torchattacks.APGD(net, norm=norm, eps=eps, steps=25,
                                    n_restarts=1, seed=0, loss='ce')
    ref = ref_atk(x, y)
    # torchattacks puts the model back in train mode only if it was in
    # train mode; ours was in eval mode and must stay there.
    assert not any(m.training for m in net.modules())
    ours = A.APGD(eps, modality='img', norm=norm, steps=25,
                  loss='dlr-targeted' if targeted else 'ce', n_targets=9)
    adv = ours.perturb(lambda d, drop=(): net(d['img']), dict(img=x), y,
                       dict(img=A.InputSpace(lo=0.0, hi=1.0)))['img']
    assert not any(m.training for m in net.modules())
    with torch.no_grad():
        clean = (net(x).argmax(1) == y).float().mean().item()
        acc_ref = (net(ref).argmax(1) == y).float().mean().item()
        acc_ours = (net(adv).argmax(1) == y).float().mean().item()
    assert acc_ref < clean - 0.1  # the budget matters
    assert abs(acc_ours - acc_ref) <= 0.01, (acc_ours, acc_ref, clean)
    d = (adv - x).flatten(1)
    size = d.norm(dim=1) if norm == 'L2' else d.abs().amax(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    assert adv.min() >= 0 and adv.max() <= 1


# ---- active test: a provably existing adversarial example -------------------


@pytest.mark.parametrize('norm', ['L2', 'Linf'])
@pytest.mark.parametrize('loss', ['dlr-targeted', 'ce'])
def test_active_known_minimal_distance(norm, loss):
    forward, x, y = linear_with_known_distance(norm=norm)
    with torch.no_grad():
        assert torch.equal(forward(x).argmax(1), y)
    rates = {}
    for scale in (1.01, 0.99):
        atk = A.APGD(scale, modality='audio', norm=norm, loss=loss,
                     steps=100, n_targets=5, clamp=False)
        rates[scale] = atk.attack(forward, x, y).fooled.float().mean().item()
    assert rates[0.99] == 0.0  # no adversarial example exists
    # Targeted DLR over every other class finds the nearest boundary; CE
    # alone is pulled towards several classes and misses some (the reason
    # the ensemble has both).
    assert rates[1.01] >= (0.99 if loss == 'dlr-targeted' else 0.5), rates


# ---- budget modes, model state, errors --------------------------------------


def test_budget_modes_and_state(tmp_path):
    net = tiny_av()
    x, y = av_batch(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    f = net.fused_logits
    uni = A.APGD(1.0, modality='audio', steps=10)
    joint = A.APGD(1.0, steps=10, loss='dlr')
    per = A.APGD(dict(visual=0.3, audio=0.8), steps=10, norm='Linf')
    assert (uni.name, joint.name, per.name) == (
        'apgd-ce_audio@1.0', 'apgd-dlr_joint@1.0',
        'apgd-ce_visual@0.3+audio@0.8_linf')
    with torch.set_grad_enabled(False):  # as inside mmengine's test loop
        adv = uni.perturb(f, x, y)
        assert adv['visual'] is x['visual']
        adv = joint.perturb(f, x, y)
        d = torch.sqrt(sum((adv[m] - x[m]).flatten(1).norm(dim=1) ** 2
                           for m in x))
        assert (d <= 1.0 + 1e-5).all() and (d > 0.5).all()
        adv = per.perturb(f, x, y)
        assert ((adv['visual'] - x['visual']).abs().amax() <= 0.3 + 1e-6)
        assert ((adv['audio'] - x['audio']).abs().amax() <= 0.8 + 1e-6)
    assert all(p.grad is None for p in net.parameters())
    assert not any(m.training for m in net.modules())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    # seeded: a pure function of the inputs
    assert torch.equal(uni.perturb(f, x, y)['audio'],
                       uni.perturb(f, x, y)['audio'])
    desc = A.APGD(8.0, modality='visual', norm='Linf', eps_unit='raw',
                  loss='dlr-targeted', restarts=2).describe()
    assert desc['name'] == 'apgd-t_visual@8.0_linf_raw'
    s = desc['settings']
    assert (s['norm'], desc['unit'], s['losses'], s['restarts'],
            s['steps'], s['n_targets']) == (
        'Linf', 'raw', ['dlr-targeted'], 2, 100, 9)


def test_subset_results_do_not_depend_on_the_others():
    net = tiny_av()
    x, y = av_batch(net)
    atk = A.APGD(0.5, modality='audio', steps=10, restarts=2)
    full = atk.attack(net.fused_logits, x, y)
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[[2, 5, 11]] = True
    part = atk.attack(net.fused_logits, x, y, active=mask)
    assert part.index.tolist() == [2, 5, 11]
    assert torch.allclose(part.adv['audio'], full.adv['audio'][mask],
                          atol=1e-6)


@pytest.mark.parametrize('make,match', [
    (lambda: A.APGD(1.0, modality='audio', loss='cw'), 'loss'),
    (lambda: A.APGD(1.0, modality='audio', norm='L1'), 'norm'),
    (lambda: A.APGD(-1.0, modality='audio'), '-1.0'),
    (lambda: A.APGD(1.0, modality='audio', steps=0), 'steps'),
    (lambda: A.APGD(1.0, modality='audio', restarts=2, random_start=False),
     'random_start'),
    (lambda: A.APGD(1.0, modality='audio', rho=1.5), 'rho'),
    (lambda: A.APGD(dict(audio=1.0), modality='audio'), 'dict'),
    (lambda: A.APGD(1.0, modality='audio', modalities=['audio']), 'not both'),
])
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_targeted_needs_four_classes():
    w = torch.randn(3, 4)
    x = dict(a=torch.randn(6, 4))
    y = (x['a'] @ w.T).argmax(1)
    atk = A.APGD(1.0, modality='a', loss='dlr-targeted', steps=2)
    with pytest.raises(ValueError, match='>= 4 classes'):
        atk.perturb(lambda d, drop=(): d['a'] @ w.T, x, y)
