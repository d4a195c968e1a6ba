"""Square attack over modality dicts: budgets, clamps, axes, strength."""
import pytest
import torch

from helpers_attacks import (MEAN, STD, accuracy, av_batch,
                             linear_with_known_distance, load_attacks,
                             tiny_av)

A = load_attacks()
VISUAL = A.InputSpace(mean=MEAN, std=STD, lo=0.0, hi=1.0)
SPACES = dict(visual=VISUAL, audio=None)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _size(d, norm):
    d = d.flatten(1)
    return d.norm(dim=1) if norm == 'L2' else d.abs().amax(dim=1)


@pytest.mark.parametrize('norm,eps', [('L2', 1.5), ('Linf', 0.3)])
def test_budgets_and_clamps_5d_and_6d(norm, eps):
    net = tiny_av()
    x, y = av_batch(net)
    f = net.fused_logits
    tol = 1 + 1e-5
    uni = A.Square(eps, modality='visual', norm=norm, queries=60)
    adv = uni.perturb(f, x, y, SPACES)
    assert adv['audio'] is x['audio']
    assert (_size(adv['visual'] - x['visual'], norm) <= eps * tol).all()
    lo, hi = VISUAL.normalized_bounds()
    assert ((adv['visual'] >= lo) & (adv['visual'] <= hi)).all()
    raw = A.Square(eps * 2, modality='visual', norm=norm, eps_unit='raw',
                   queries=30).perturb(f, x, y, SPACES)
    assert (_size((raw['visual'] - x['visual']) * STD, norm)
            <= 2 * eps * tol).all()
    per = A.Square(dict(visual=eps / 2, audio=eps), norm=norm, queries=30)
    adv = per.perturb(f, x, y, SPACES)
    assert (_size(adv['visual'] - x['visual'], norm) <= eps / 2 * tol).all()
    assert (_size(adv['audio'] - x['audio'], norm) <= eps * tol).all()
    joint = A.Square(eps, norm=norm, queries=30).perturb(f, x, y, SPACES)
    d = {m: joint[m] - x[m] for m in x}
    if norm == 'L2':
        total = torch.sqrt(sum(_size(t, 'L2') ** 2 for t in d.values()))
        assert (total <= eps * tol).all()
    else:
        assert all((_size(t, 'Linf') <= eps * tol).all() for t in d.values())


def test_window_shared_over_frames_and_channels():
    """One window per sample and iteration on the last two axes, the same
    for every channel and frame of a video."""
    net = tiny_av()
    x, y = av_batch(net, flipped=0)
    # After the stripes initialisation, two proposals differ from the
    # current point only inside one H x W window, in every (C, T) slice.
    atk = A.Square(0.2, modality='visual', norm='Linf', queries=2,
                   clamp=False)
    geo = atk.geometry(x, y, None)
    index = torch.arange(y.shape[0])
    u = atk._init(geo, geo.take(index), index)
    assert torch.equal(u['visual'].abs(),
                       torch.full_like(u['visual'], 0.2))
    # stripes: constant along H
    assert torch.equal(u['visual'], u['visual'][..., :1, :].expand_as(
        u['visual']))
    new = atk._propose(geo, geo.take(index), u, 1, index)
    changed = (new['visual'] != u['visual'])  # [B, 1, 3, 2, 6, 6]
    where = changed.flatten(1, 3).any(1)  # [B, H, W]: the window
    assert where.any()
    # every changed (h, w) position is inside one s x s square
    for b in range(y.shape[0]):
        rows, cols = torch.nonzero(where[b], as_tuple=True)
        if rows.numel():
            assert rows.max() - rows.min() < 6 and cols.max() - cols.min() < 6


@pytest.mark.parametrize('norm', ['L2', 'Linf'])
def test_square_lowers_accuracy_and_is_seeded(norm):
    net = tiny_av()
    x, y = av_batch(net, flipped=0)
    f = net.fused_logits
    eps = 2.0 if norm == 'L2' else 0.4
    atk = A.Square(eps, modality='audio', norm=norm, queries=200, seed=3)
    out = atk.attack(f, x, y, SPACES)
    assert out.fooled.float().mean() >= 0.3
    assert accuracy(out.logits, y) < 1.0
    again = atk.attack(f, x, y, SPACES)
    assert torch.equal(out.adv['audio'], again.adv['audio'])
    # a subset gets exactly the same per-sample result
    mask = torch.zeros_like(y, dtype=torch.bool)
    mask[1::3] = True
    part = atk.attack(f, x, y, SPACES, active=mask)
    assert torch.allclose(part.adv['audio'], out.adv['audio'][mask])


def test_square_active_linf():
    forward, x, y = linear_with_known_distance(norm='Linf')
    rates = {s: A.Square(s, modality='audio', norm='Linf', queries=300,
                         clamp=False).attack(forward, x, y).fooled
             .float().mean().item() for s in (0.99, 1.5)}
    assert rates[0.99] == 0.0 and rates[1.5] >= 0.9, rates


def test_square_errors_and_description():
    with pytest.raises(ValueError, match='queries'):
        A.Square(1.0, modality='audio', queries=0)
    with pytest.raises(ValueError, match='p_init'):
        A.Square(1.0, modality='audio', p_init=0.0)
    desc = A.Square(0.5, modality='audio', queries=100).describe()
    assert desc['name'] == 'square_audio@0.5'
    s = desc['settings']
    assert s['queries'] == 100 and s['losses'] == ['margin']
    assert 'last two axes' in s['image_axes']
