"""MultiModalAutoAttack: worst case, survivor-only, nested sweeps, builder.
"""
import math

import pytest
import torch

from helpers_attacks import (MEAN, STD, accuracy, av_batch,
                             linear_with_known_distance, load_attacks,
                             tiny_av)

A = load_attacks()
VISUAL = A.InputSpace(mean=MEAN, std=STD, lo=0.0, hi=1.0)
SPACES = dict(visual=VISUAL, audio=None)
CHEAP = dict(version='fast', steps=8, n_targets=2, queries=40)


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def setup():
    net = tiny_av()
    x, y = av_batch(net, n=32)
    return net, x, y


def _size(d, norm):
    d = d.flatten(1)
    return d.norm(dim=1) if norm == 'L2' else d.abs().amax(dim=1)


def test_versions_and_names():
    std = A.MultiModalAutoAttack(0.5, modality='audio')
    assert std.name == 'aa-standard_audio@0.5'
    assert [m.name for m in std.members] == [
        'apgd-ce_audio@0.5', 'apgd-t_audio@0.5', 'square_audio@0.5']
    assert [m.steps for m in std.members[:2]] == [100, 100]
    assert std.members[1].n_targets == 9 and std.members[2].queries == 5000
    ref = A.MultiModalAutoAttack(0.5, version='reference', modality='audio')
    assert [type(m).__name__ for m in ref.members] == ['UniModalFGM',
                                                       'UniModalPGD']
    pgd = ref.members[1]
    assert (pgd.steps, pgd.balls[0][2], pgd.random_start) == (4, 0.5 / 3,
                                                              False)
    fast = A.MultiModalAutoAttack(dict(visual=4.0, audio=0.1), norm='Linf',
                                  version='fast', eps_unit='raw')
    assert fast.name == 'aa-fast_visual@4.0+audio@0.1_linf_raw'
    assert [m.name for m in fast.members][0] == \
        'apgd-ce_visual@4.0+audio@0.1_linf_raw'
    desc = std.describe()
    s = desc['settings']
    assert desc['kind'] == 'aa-standard' and s['norm'] == 'L2'
    assert s['version'] == 'standard' and desc['curve'] is not None
    assert s['attacks'] == [m.name for m in std.members]
    assert s['losses'] == ['ce', 'dlr-targeted', 'margin']
    assert 'FAB' in s['not_included']
    assert s['members'][2]['settings']['queries'] == 5000
    joint = A.MultiModalAutoAttack(1.0, version='reference')
    assert [type(m).__name__ for m in joint.members] == ['MultiModalFGM',
                                                         'MultiModalPGD']
    with pytest.raises(ValueError, match='reference'):
        A.MultiModalAutoAttack(1.0, version='reference', steps=10)
    with pytest.raises(ValueError, match='version'):
        A.MultiModalAutoAttack(1.0, version='plus')


@pytest.mark.parametrize('norm,eps', [('L2', 1.0), ('Linf', 0.15)])
def test_worst_case_below_every_member(setup, norm, eps):
    net, x, y = setup
    f = net.fused_logits
    aa = A.MultiModalAutoAttack(eps, norm=norm, modality='audio', **CHEAP)
    res = aa.run(f, x, y, SPACES)
    with torch.no_grad():
        clean = accuracy(f(x), y)
        members = [accuracy(m.predict(f, x, y, SPACES), y)
                   for m in aa.members]
        # the chosen inputs reproduce the reported logits and outcome
        assert torch.equal(f(res.adv).argmax(1) == y, res.robust)
    assert res.accuracy <= min(members) and res.accuracy <= clean
    assert torch.allclose(res.logits, aa.predict(f, x, y, SPACES))
    assert (_size(res.adv['audio'] - x['audio'], norm) <= eps * 1.00001).all()
    assert res.adv['visual'] is x['visual']
    steps = res.per_attack()
    assert [s['name'] for s in steps] == [m.name for m in aa.members]
    assert steps[-1]['robust_accuracy'] == pytest.approx(res.accuracy)
    # survivor-only: each member attacks only what is left
    assert steps[1]['attacked'] == round(steps[0]['robust_accuracy'] * 32)
    assert res.broken_by.count('clean') == 3
    gf = res.gradient_free_only
    assert all(res.broken_by[i] == aa.members[2].name
               for i in torch.nonzero(gf).flatten().tolist())


def test_nested_sweep_is_monotone_and_equals_naive(setup):
    net, x, y = setup
    f = net.fused_logits
    aa = A.MultiModalAutoAttack(0.25, modality='visual', **CHEAP)
    grid = [0.25, 0.5, 1.0, 2.0]
    nested = aa.sweep(f, x, y, SPACES, grid)
    naive = aa.sweep(f, x, y, SPACES, grid, nested=False)
    acc = nested.accuracy
    assert all(a >= b for a, b in zip(acc, acc[1:])), acc
    assert acc[-1] < acc[0]
    assert (nested.robust[1:] <= nested.robust[:-1]).all()
    assert torch.equal(nested.robust, naive.robust)
    assert nested.broken_by == naive.broken_by
    assert torch.equal(nested.break_eps, naive.break_eps)
    # attacked counts shrink with nesting
    assert nested.results[1].attacked[aa.members[0].with_eps(0.5).name] < \
        naive.results[1].attacked[aa.members[0].with_eps(0.5).name]
    for i in range(y.shape[0]):
        e, j = nested.break_eps[i].item(), nested.break_index[i].item()
        if nested.broken_by[i] == 'clean':
            assert e == 0.0 and j == -1
        elif nested.broken_by[i] is None:
            assert math.isinf(e) and j == len(grid)
            assert bool(nested.robust[-1, i])
        else:
            assert e == grid[j] and not nested.robust[j, i]
            assert j == 0 or nested.robust[j - 1, i]
            assert nested.broken_by[i].endswith(f'@{grid[j]!r}')
    # the per-budget ensemble alone agrees with the sweep at that budget
    alone = aa.with_eps(1.0).run(f, x, y, SPACES)
    assert (nested.robust[2] <= alone.robust).all()
    with pytest.raises(ValueError, match='ascending'):
        aa.sweep(f, x, y, SPACES, [1.0, 0.5])


def test_builder_and_nested_sweep(setup):
    net, x, y = setup
    built = A.build_perturbations([
        dict(type='MultiModalAutoAttack', modality='audio', eps=[1.0, 0.5],
             **CHEAP),
        dict(type='APGD', modality='audio', eps=0.5, loss='dlr', steps=5),
        dict(type='Square', modality='visual', eps=[0.2], norm='Linf',
             queries=20),
        dict(type='UniModalPGD', modality='audio', eps=0.5, norm='Linf'),
    ])
    assert [p.name for p in built] == [
        'aa-fast_audio@1.0', 'aa-fast_audio@0.5', 'apgd-dlr_audio@0.5',
        'square_visual@0.2_linf', 'pgd_audio@0.5_linf']
    sweep = A.nested_sweep(built[:2], net.fused_logits, x, y, SPACES)
    assert sweep.budgets == [0.5, 1.0]
    assert built[0].sweep_key() == built[1].sweep_key()
    with pytest.raises(ValueError, match='more than'):
        A.nested_sweep([built[0], A.MultiModalAutoAttack(
            0.5, modality='visual', **CHEAP)], net.fused_logits, x, y)
    A.check_modalities(built, ('visual', 'audio'))


ATTACKS = [
    lambda n, e: A.UniModalPGD('visual', e, norm=n, random_start=True),
    lambda n, e: A.PerModalityFGM(dict(visual=e, audio=e), norm=n),
    lambda n, e: A.MultiModalPGD(e, norm=n),
    lambda n, e: A.APGD(e, modality='visual', norm=n, steps=5,
                        loss='dlr-targeted', n_targets=2),
    lambda n, e: A.APGD(dict(visual=e, audio=e / 2), norm=n, steps=5),
    lambda n, e: A.Square(e, norm=n, queries=10),
    lambda n, e: A.MultiModalAutoAttack(e, norm=n, modality='visual',
                                        **CHEAP),
    lambda n, e: A.MultiModalAutoAttack(e, norm=n, version='reference'),
]


@pytest.mark.parametrize('norm,eps', [('L2', 3.0), ('Linf', 0.5)])
@pytest.mark.parametrize('make', ATTACKS, ids=range(len(ATTACKS)))
def test_every_attack_budget_clamp_and_state(setup, norm, eps, make):
    net, x, y = setup
    atk = make(norm, eps)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    before = {m: t.clone() for m, t in x.items()}
    with torch.no_grad():
        adv = atk.perturb(net.fused_logits, x, y, SPACES)
    lo, hi = VISUAL.normalized_bounds()
    assert ((adv['visual'] >= lo) & (adv['visual'] <= hi)).all()
    d = {m: adv[m] - x[m] for m in x}
    if isinstance(atk.eps, dict):
        for m, e in atk.eps.items():
            assert (_size(d[m], norm) <= e * 1.00001).all()
    elif norm == 'L2' and atk.modalities is None:
        total = torch.sqrt(sum(_size(t, 'L2') ** 2 for t in d.values()))
        assert (total <= eps * 1.00001).all()
    else:
        assert all((_size(t, norm) <= eps * 1.00001).all()
                   for t in d.values())
    assert not any(t.requires_grad for t in adv.values())
    assert all(p.grad is None for p in net.parameters())
    assert not any(m.training for m in net.modules())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(torch.equal(before[m], x[m]) for m in x)


@pytest.mark.parametrize('norm', ['L2', 'Linf'])
def test_active_ensemble(norm):
    forward, x, y = linear_with_known_distance(n=150, norm=norm)
    rates = {}
    for scale in (1.01, 0.99):
        aa = A.MultiModalAutoAttack(scale, norm=norm, modality='audio',
                                    version='fast', n_targets=5, queries=50,
                                    clamp=False)
        rates[scale] = 1 - aa.run(forward, x, y).accuracy
    assert rates[0.99] == 0.0 and rates[1.01] >= 0.99, rates
