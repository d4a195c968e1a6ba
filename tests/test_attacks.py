"""Tests of crmt_mm.attacks (docs/method.md §10) on a tiny two-modality model.

The package is loaded on its own (importlib, private module name) because it
must not depend on the rest of crmt_mm or on mmengine/mmaction; this also
keeps the file fast.
"""
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'crmt_mm' / 'attacks'


def _load_attacks():
    name = '_crmt_mm_attacks_under_test'
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, PKG / '__init__.py', submodule_search_locations=[str(PKG)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


A = _load_attacks()

B, K = 16, 5
V_SHAPE = (B, 1, 3, 2, 6, 6)  # [B, N, C, T, H, W]
A_SHAPE = (B, 1, 1, 8, 8)  # [B, N, 1, F, M]
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1, 1)
VISUAL = A.InputSpace(mean=MEAN, std=STD, lo=0., hi=1.)
SPACES = dict(visual=VISUAL, audio=None)


class ToyAV(nn.Module):
    """Two tiny encoders (conv, BatchNorm, MLP) with summed linear heads.

    ``drop`` zeroes a modality's feature (its head bias stays), like the
    recognizer's feature zeroing.
    """

    modalities = ('visual', 'audio')

    def __init__(self, hidden=8):
        super().__init__()
        self.visual = nn.Sequential(
            nn.Conv3d(3, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU(),
            nn.AdaptiveAvgPool3d((1, 3, 3)), nn.Flatten(),
            nn.Linear(54, hidden), nn.ReLU())
        self.audio = nn.Sequential(
            nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(96, hidden),
            nn.ReLU())
        self.heads = nn.ModuleDict(
            dict(visual=nn.Linear(hidden, K), audio=nn.Linear(hidden, K)))

    def fused_logits(self, x, drop=()):
        feats = dict(visual=self.visual(x['visual'].flatten(0, 1)),
                     audio=self.audio(x['audio'].flatten(0, 1)))
        return sum(self.heads[m](torch.zeros_like(f) if m in drop else f)
                   for m, f in feats.items())


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny ops on 2 shared cores: thread sync costs 100x the work."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _raw_visual(n=B):
    return torch.rand((n,) + V_SHAPE[1:])


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    net = ToyAV()
    with torch.no_grad():
        for p in net.parameters():  # confident, visibly non-linear logits
            p.mul_(3)
        # non-trivial BatchNorm running statistics
        for _ in range(3):
            net.fused_logits(dict(visual=(_raw_visual() - MEAN) / STD,
                                  audio=torch.randn(A_SHAPE)))
    return net.eval()


@pytest.fixture(scope='module')
def batch(model):
    """Normalised inputs; labels = clean predictions but 3 flipped."""
    g = torch.Generator().manual_seed(1)
    x = dict(visual=(torch.rand(V_SHAPE, generator=g) - MEAN) / STD,
             audio=torch.randn(A_SHAPE, generator=g))
    with torch.no_grad():
        y = model.fused_logits(x).argmax(1)
    y[:3] = (y[:3] + 1) % K
    return x, y


def _acc(logits, y):
    return (logits.argmax(1) == y).float().mean().item()


def _norm(t):
    return t.flatten(1).norm(dim=1)


def _joint_norm(*ts):
    return torch.sqrt(sum(_norm(t) ** 2 for t in ts))


def _clone(x):
    return {m: t.clone() for m, t in x.items()}


# ---- plain torch, InputSpace ------------------------------------------------


def test_package_is_plain_torch():
    for path in PKG.glob('*.py'):
        src = path.read_text()
        assert not re.search(r'^\s*(from|import)\s+(mmengine|mmaction|mmcv)',
                             src, re.M), path.name
        assert not re.search(r'^\s*from\s+crmt_mm', src, re.M), path.name
        assert not re.search(r'\.backward\(', src), path.name


def test_input_space_bounds_and_errors():
    lo, hi = VISUAL.normalized_bounds()
    assert torch.allclose(lo, -MEAN / STD) and torch.allclose(hi,
                                                              (1 - MEAN) / STD)
    raw = torch.tensor([-1., 0.5, 300.])
    space = A.InputSpace(mean=100., std=50., lo=0, hi=255)
    assert torch.allclose(space.clamp((raw - 100) / 50) * 50 + 100,
                          raw.clamp(0, 255))
    assert A.InputSpace().normalized_bounds() is None
    lo, hi = A.InputSpace(lo=0.).normalized_bounds()
    assert lo.item() == 0 and hi.item() == float('inf')
    with pytest.raises(ValueError, match='std must be > 0'):
        A.InputSpace(std=torch.tensor([1., 0.]))
    with pytest.raises(ValueError, match='lo < hi'):
        A.InputSpace(lo=1, hi=1)


# ---- agreement with torchattacks --------------------------------------------


class _OneModality(nn.Module):
    """What torchattacks sees: one modality as a 4-D raw tensor in [0, 1].

    torchattacks' PGDL2 reshapes norms with ``view(-1, 1, 1, 1)``, which is
    only right for 4-D inputs, so the video is folded to [B, 3, T*H, W].
    """

    def __init__(self, net, x, modality, mean, std):
        super().__init__()
        self.net, self.x, self.modality = net, x, modality
        self.mean, self.std = mean, std

    def forward(self, flat):
        inputs = dict(self.x)
        raw = flat.reshape(self.x[self.modality].shape)
        inputs[self.modality] = (raw - self.mean) / self.std
        return self.net.fused_logits(inputs)


@pytest.mark.parametrize('modality,eps,eps_unit', [
    ('visual', 0.3, 'raw'),  # budget in [0, 1] pixel units
    ('audio', 0.1, 'normalized'),
])
def test_unimodal_pgd_matches_torchattacks(model, batch, modality, eps,
                                           eps_unit):
    torchattacks = pytest.importorskip('torchattacks')
    x, y = batch
    if modality == 'visual':
        mean, std, space = MEAN, STD, VISUAL
    else:  # audio in [0, 1] with bounds [0, 1]: identity normalisation
        x = dict(x, audio=torch.rand(A_SHAPE, generator=torch.Generator()
                                     .manual_seed(2)))
        mean, std, space = torch.zeros(()), torch.ones(()), A.InputSpace(
            lo=0., hi=1.)
    raw = x[modality] * std + mean
    wrapper = _OneModality(model, x, modality, mean, std).eval()
    flat = raw.reshape(B, raw.shape[2], -1, raw.shape[-1])
    ref = torchattacks.PGDL2(wrapper, eps=eps, alpha=eps / 3, steps=4,
                             random_start=False)(flat, y)
    # torchattacks restores train mode if it found it: the recognizer must
    # stay in eval mode (BatchNorm statistics) through the cross-check.
    assert not any(m.training for m in model.modules())
    ref = ref.reshape(raw.shape)

    atk = A.UniModalPGD(modality, eps, eps_unit=eps_unit)
    adv = atk.perturb(model.fused_logits, x, y, {modality: space})
    ours = adv[modality] * std + mean
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    with torch.no_grad():
        ours_acc = _acc(model.fused_logits(adv), y)
        ref_acc = _acc(wrapper(ref), y)
        clean_acc = _acc(model.fused_logits(x), y)
    assert ours_acc == ref_acc < clean_acc, (ours_acc, clean_acc)


# ---- budgets, boundary, clamping, no-ops ------------------------------------


def test_pgd_budgets_hold(model, batch):
    x, y = batch
    f = model.fused_logits
    tol = 1 + 1e-5
    adv = A.MultiModalPGD(2.0).perturb(f, x, y, SPACES)
    d = {m: adv[m] - x[m] for m in x}
    assert (_joint_norm(d['visual'], d['audio']) <= 2.0 * tol).all()
    assert (_norm(d['visual']) > 0).all() and (_norm(d['audio']) > 0).all()

    adv = A.MultiModalPGD(1.0, random_start=True, restarts=3).perturb(
        f, x, y, SPACES)
    d = {m: adv[m] - x[m] for m in x}
    assert (_joint_norm(d['visual'], d['audio']) <= 1.0 * tol).all()

    atk = A.PerModalityPGD(dict(visual=0.5, audio=1.5), random_start=True)
    adv = atk.perturb(f, x, y, SPACES)
    assert (_norm(adv['visual'] - x['visual']) <= 0.5 * tol).all()
    assert (_norm(adv['audio'] - x['audio']) <= 1.5 * tol).all()

    adv = A.UniModalPGD('audio', 3.0, steps=6, step_size=1.0).perturb(
        f, x, y, SPACES)
    assert adv['visual'] is x['visual']  # only the attacked modality changes
    assert (_norm(adv['audio'] - x['audio']) <= 3.0 * tol).all()

    adv = A.UniModalPGD('visual', 4.0, eps_unit='raw').perturb(
        f, x, y, SPACES)
    assert adv['audio'] is x['audio']
    assert (_norm((adv['visual'] - x['visual']) * STD) <= 4.0 * tol).all()


@pytest.mark.parametrize('atk,norms', [
    (A.UniModalFGM('audio', 0.7, clamp=False),
     lambda d: [(_norm(d['audio']), 0.7)]),
    (A.MultiModalFGM(0.9, clamp=False),
     lambda d: [(_joint_norm(d['visual'], d['audio']), 0.9)]),
    (A.PerModalityFGM(dict(visual=0.3, audio=0.6), clamp=False),
     lambda d: [(_norm(d['visual']), 0.3), (_norm(d['audio']), 0.6)]),
    (A.UniModalFGM('visual', 2.0, eps_unit='raw', clamp=False),
     lambda d: [(_norm(d['visual'] * STD), 2.0)]),
])
def test_fgm_on_the_boundary(model, batch, atk, norms):
    x, y = batch
    adv = atk.perturb(model.fused_logits, x, y, SPACES)
    for n, eps in norms({m: adv[m] - x[m] for m in x}):
        assert torch.allclose(n, torch.full_like(n, eps), rtol=1e-5)


def test_clamp_keeps_valid_range(model, batch):
    x, y = batch
    f = model.fused_logits
    adv = A.MultiModalPGD(50.0).perturb(f, x, y, SPACES)
    lo, hi = VISUAL.normalized_bounds()
    assert ((adv['visual'] >= lo) & (adv['visual'] <= hi)).all()
    assert (adv['visual'] == lo).any() and (adv['visual'] == hi).any()
    assert (adv['audio'] != x['audio']).any()  # audio: no space, no clamp
    unclamped = A.MultiModalPGD(50.0, clamp=False).perturb(f, x, y, SPACES)
    raw = unclamped['visual'] * STD + MEAN
    assert raw.min() < -0.01 or raw.max() > 1.01
    noisy = A.GaussianNoise('visual', sigma=5.0).perturb(f, x, y, SPACES)
    raw = noisy['visual'] * STD + MEAN
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


@pytest.mark.parametrize('atk', [
    A.MultiModalFGM(0.0), A.MultiModalPGD(0.0), A.UniModalFGM('audio', 0),
    A.UniModalPGD('visual', 0.0, eps_unit='raw'),
    A.PerModalityPGD(dict(visual=0.0, audio=0.0)),
    A.PerModalityFGM(dict(visual=0.0, audio=0.0)),
    A.GaussianNoise(sigma=0.0)
])
def test_zero_budget_is_a_noop(model, batch, atk):
    x, y = batch
    out = atk.perturb(model.fused_logits, x, y, SPACES)
    assert out.keys() == x.keys()
    assert all(out[m] is x[m] for m in x)


def test_zero_budget_modality_untouched(model, batch):
    x, y = batch
    adv = A.PerModalityPGD(dict(visual=0.0, audio=1.0)).perturb(
        model.fused_logits, x, y, SPACES)
    assert adv['visual'] is x['visual'] and (adv['audio'] != x['audio']).any()


def test_zero_gradient_gives_no_step_and_no_nan(model, batch):
    x, y = batch

    def ignores_audio(inputs, drop=()):
        return model.fused_logits(inputs, drop=('audio',))

    adv = A.UniModalPGD('audio', 1.0).perturb(ignores_audio, x, y)
    assert torch.equal(adv['audio'], x['audio'])
    frozen = nn.Linear(3 * 2 * 6 * 6, K).requires_grad_(False)
    adv = A.MultiModalFGM(1.0, modalities=['audio']).perturb(
        lambda inputs, drop=(): frozen(inputs['visual'].flatten(1)), x, y)
    assert torch.equal(adv['audio'], x['audio'])


# ---- strength ---------------------------------------------------------------


BUDGETS = [
    (A.UniModalFGM('audio', 1.0), A.UniModalPGD('audio', 1.0)),
    (A.UniModalFGM('visual', 1.0), A.UniModalPGD('visual', 1.0)),
    (A.MultiModalFGM(0.5), A.MultiModalPGD(0.5)),
    (A.PerModalityFGM(dict(visual=0.5, audio=0.5)),
     A.PerModalityPGD(dict(visual=0.5, audio=0.5))),
]


@pytest.mark.parametrize('fgm,pgd', BUDGETS, ids=lambda a: a.name)
def test_robust_le_clean_and_pgd_beats_fgm(model, batch, fgm, pgd):
    x, y = batch
    f = model.fused_logits
    with torch.no_grad():
        clean = f(x)
        fgm_logits = fgm.predict(f, x, y, SPACES)
        pgd_logits = pgd.predict(f, x, y, SPACES)
    assert _acc(pgd_logits, y) <= _acc(fgm_logits, y) < _acc(clean, y)
    assert F.cross_entropy(pgd_logits, y) >= F.cross_entropy(fgm_logits, y) \
        > F.cross_entropy(clean, y)


def test_pgd_stronger_than_fgm_on_average(model, batch):
    x, y = batch
    f = model.fused_logits
    with torch.no_grad():
        accs = torch.tensor([[_acc(a.predict(f, x, y, SPACES), y)
                              for a in pair] for pair in BUDGETS])
    fgm_mean, pgd_mean = accs.mean(0).tolist()
    assert pgd_mean < fgm_mean, accs


def test_random_restarts(model, batch):
    x, y = batch
    f = model.fused_logits
    one = A.UniModalPGD('audio', 1.0, random_start=True, seed=3)
    three = A.UniModalPGD('audio', 1.0, random_start=True, restarts=3, seed=3)
    with torch.no_grad():
        a1, a1_again = one.predict(f, x, y), one.predict(f, x, y)
        a3 = three.predict(f, x, y)
        other = A.UniModalPGD('audio', 1.0, random_start=True,
                              seed=4).perturb(f, x, y)
    assert torch.equal(a1, a1_again)  # seeded: a pure function of inputs
    assert not torch.equal(other['audio'], one.perturb(f, x, y)['audio'])
    # The first restart equals the single run; later ones only add fooled
    # samples.
    fooled1, fooled3 = a1.argmax(1) != y, a3.argmax(1) != y
    assert (fooled3 | ~fooled1).all()


# ---- the model is never touched ---------------------------------------------


ALL = [
    A.MultiModalFGM(1.0), A.MultiModalPGD(1.0, random_start=True,
                                          restarts=2),
    A.UniModalFGM('visual', 1.0), A.UniModalPGD('audio', 1.0),
    A.UniModalPGD('visual', 3.0, eps_unit='raw'),
    A.PerModalityFGM(dict(visual=1.0, audio=0.5)),
    A.PerModalityPGD(dict(visual=1.0, audio=0.5)),
    A.MissingModality('audio'), A.MissingModality('visual', mode='feature'),
    A.GaussianNoise(sigma=0.3), A.GaussianNoise('audio', sigma=0.3),
    A.WorstCase([A.UniModalFGM('audio', 1.0), A.UniModalPGD('audio', 1.0)]),
]


@pytest.mark.parametrize('atk', ALL, ids=lambda a: a.name)
@pytest.mark.parametrize('grad', [False, True], ids=['no_grad', 'grad'])
def test_model_state_untouched(model, batch, atk, grad):
    x, y = batch
    x_before = _clone(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.set_grad_enabled(grad):
        logits = atk.predict(model.fused_logits, x, y, SPACES)
        if atk.acts_on_inputs:
            adv = atk.perturb(model.fused_logits, x, y, SPACES)
            assert adv.keys() == x.keys()
            assert not any(t.requires_grad for t in adv.values())
    assert logits.shape == (B, K)
    assert not model.training and not any(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)  # BN buffers
    assert all(torch.equal(x_before[m], x[m]) for m in x)  # no in-place


def test_train_mode_is_left_alone(model, batch):
    x, y = batch
    net = ToyAV()
    net.load_state_dict(model.state_dict())
    net.train()
    A.UniModalPGD('audio', 1.0).perturb(net.fused_logits, x, y)
    assert all(m.training for m in net.modules())


def test_inference_mode_is_reported(model, batch):
    x, y = batch
    with torch.inference_mode(), pytest.raises(RuntimeError, match='autograd'):
        A.UniModalPGD('audio', 1.0).perturb(model.fused_logits, x, y)


# ---- missing modality, noise, worst case ------------------------------------


def test_missing_modality(model, batch):
    x, y = batch
    f = model.fused_logits
    inp = A.MissingModality('audio')
    out = inp.perturb(f, x, y)
    assert out['visual'] is x['visual']
    assert torch.equal(out['audio'], torch.zeros(A_SHAPE))
    with torch.no_grad():
        assert torch.equal(inp.predict(f, x, y), f(out))
        feat = A.MissingModality('audio', mode='feature')
        assert torch.equal(feat.predict(f, x, y), f(x, drop=('audio',)))
        assert not torch.equal(feat.predict(f, x, y), inp.predict(f, x, y))
    assert (inp.name, feat.name) == ('missing_audio', 'missing_audio_feat')
    with pytest.raises(NotImplementedError, match='predict'):
        feat.perturb(f, x, y)
    with pytest.raises(ValueError, match="'zero'"):
        A.MissingModality('audio', mode='zero')


def test_gaussian_noise_is_seeded(model, batch):
    x, y = batch
    f = model.fused_logits
    noise = A.GaussianNoise('audio', sigma=0.5, seed=7)
    rng = torch.get_rng_state()
    torch.manual_seed(1)
    first = noise.perturb(f, x, y)
    torch.manual_seed(2)
    second = A.GaussianNoise('audio', sigma=0.5, seed=7).perturb(f, x, y)
    assert torch.equal(first['audio'], second['audio'])
    assert first['visual'] is x['visual']
    torch.set_rng_state(rng)
    noise.perturb(f, x, y)
    assert torch.equal(torch.get_rng_state(), rng)  # global RNG untouched
    other = A.GaussianNoise('audio', sigma=0.5, seed=8).perturb(f, x, y)
    assert not torch.equal(other['audio'], first['audio'])
    std = (first['audio'] - x['audio']).std().item()
    assert abs(std - 0.5) < 0.05
    both = A.GaussianNoise(sigma=0.5).perturb(f, x, y, SPACES)
    assert all((both[m] != x[m]).any() for m in x)


class _Fixed(A.Perturbation):
    """Returns fixed logits and counts the calls."""

    def __init__(self, preds, name):
        super().__init__(name)
        self.logits = F.one_hot(torch.tensor(preds), K).float()
        self.calls = 0

    def perturb(self, forward, x, y, spaces=None):
        raise NotImplementedError

    def predict(self, forward, x, y, spaces=None):
        self.calls += 1
        return self.logits


def test_worst_case_semantics(model, batch):
    y = torch.zeros(4, dtype=torch.long)
    a = _Fixed([0, 1, 0, 1], 'a')  # fools samples 1, 3
    b = _Fixed([1, 0, 0, 2], 'b')  # fools samples 0, 3
    worst = A.WorstCase([a, b])
    logits = worst.predict(None, {}, y)
    # first fooling member, else the last member
    assert logits.argmax(1).tolist() == [1, 1, 0, 1]
    assert _acc(logits, y) == 0.25
    c, d = _Fixed([1, 1, 1, 1], 'c'), _Fixed([0, 0, 0, 0], 'd')
    A.WorstCase([c, d]).predict(None, {}, y)
    assert d.calls == 0  # everything already fooled: d cannot matter
    assert worst.name == 'worst[a,b]'

    x, y = batch
    f = model.fused_logits
    fgm, pgd = A.UniModalFGM('audio', 1.0), A.UniModalPGD('audio', 1.0)
    worst = A.WorstCase([fgm, pgd])
    assert worst.name == 'worst_audio@1.0'
    with torch.no_grad():
        ok = [fgm.predict(f, x, y).argmax(1) == y,
              pgd.predict(f, x, y).argmax(1) == y]
        adv = worst.perturb(f, x, y)
        assert torch.equal(f(adv).argmax(1) == y, ok[0] & ok[1])
        assert torch.equal(worst.predict(f, x, y).argmax(1) == y,
                           ok[0] & ok[1])
    assert adv['visual'] is x['visual']
    with pytest.raises(ValueError, match='non-empty'):
        A.WorstCase([])
    mixed = A.WorstCase([fgm, A.MissingModality('audio', mode='feature')])
    assert not mixed.acts_on_inputs
    with pytest.raises(NotImplementedError, match='predict'):
        mixed.perturb(f, x, y)


# ---- errors -----------------------------------------------------------------


@pytest.mark.parametrize('make,match', [
    (lambda: A.UniModalPGD('audio', -0.5), '-0.5'),
    (lambda: A.MultiModalPGD(float('nan')), 'nan'),
    (lambda: A.UniModalPGD('audio', 1.0, steps=0), 'steps.*0'),
    (lambda: A.UniModalPGD('audio', 1.0, steps=2.5), '2.5'),
    (lambda: A.UniModalPGD('audio', 1.0, step_size=0), 'step_size'),
    (lambda: A.UniModalPGD('audio', 1.0, step_size=-1.0), '-1.0'),
    (lambda: A.UniModalPGD('audio', 1.0, restarts=2), 'random_start'),
    (lambda: A.UniModalPGD('audio', 1.0, eps_unit='pixels'), 'pixels'),
    (lambda: A.UniModalFGM('', 1.0), 'modality'),
    (lambda: A.MultiModalFGM(1.0, modalities='audio'), 'list of names'),
    (lambda: A.MultiModalPGD(1.0, modalities=['audio', 'audio']),
     'duplicate'),
    (lambda: A.PerModalityPGD({}), 'non-empty dict'),
    (lambda: A.PerModalityPGD(dict(audio=1.0), step_size=dict(visual=.1)),
     'keys'),
    (lambda: A.PerModalityFGM(dict(visual=1.0, audio=-2.0)),
     r"eps\['audio'\].*-2.0"),
    (lambda: A.GaussianNoise('audio', sigma=-0.1), '-0.1'),
])
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_errors_at_call_time(model, batch):
    x, y = batch
    f = model.fused_logits
    with pytest.raises(KeyError, match=r"'flow'.*\('visual', 'audio'\)"):
        A.UniModalPGD('flow', 1.0).perturb(f, x, y)
    with pytest.raises(ValueError, match="'flow'"):
        A.MissingModality('flow').predict(f, x, y)
    with pytest.raises(ValueError, match=r"spaces\['audio'\]"):
        A.UniModalPGD('audio', 1.0, eps_unit='raw').perturb(f, x, y, SPACES)
    with pytest.raises(ValueError, match=r"spaces\['visual'\]"):
        A.UniModalPGD('visual', 1.0).perturb(f, x, y, dict(visual=(0, 1)))
    with pytest.raises(ValueError, match='labels'):
        A.UniModalPGD('audio', 1.0).perturb(f, x, y[:, None])


# ---- builder ----------------------------------------------------------------


def test_builder_names_and_expansion():
    cfgs = [
        dict(type='UniModalPGD', modality='audio', eps=[0.5, 1.0], steps=4),
        dict(type='UniModalFGM', modality='audio', eps=0.5),
        dict(type='MultiModalPGD', eps=0.2),
        dict(type='PerModalityPGD', eps=dict(visual=0.1, audio=0.5)),
        dict(type='UniModalPGD', modality='visual', eps=2, eps_unit='raw'),
        dict(type='MissingModality', modality='audio'),
        dict(type='MissingModality', modality='audio', mode='feature'),
        dict(type='GaussianNoise', modality='audio', sigma=[0.1]),
        dict(type='GaussianNoise', sigma=0.1),
        dict(type='WorstCase', modality='audio', eps=[0.5]),
        dict(type='WorstCase', eps=0.2),
        dict(type='UniModalPGD', modality='audio', eps=[0.5, 2.0],
             name=['a', 'b']),
    ]
    frozen = repr(cfgs)
    atks = A.build_perturbations(cfgs)
    assert repr(cfgs) == frozen  # configs are not modified
    assert [a.name for a in atks] == [
        'pgd_audio@0.5', 'pgd_audio@1.0', 'fgm_audio@0.5', 'pgd_joint@0.2',
        'pgd_visual@0.1+audio@0.5', 'pgd_visual@2.0_raw', 'missing_audio',
        'missing_audio_feat', 'noise_audio@0.1', 'noise_all@0.1',
        'worst_audio@0.5', 'worst_joint@0.2', 'a', 'b']
    assert atks[1].steps == 4 and atks[1].eps == 1.0
    assert [type(p).__name__ for p in atks[10].perturbations] == [
        'UniModalFGM', 'UniModalPGD']
    worst = A.build_perturbations(dict(
        type='WorstCase', eps=[1.0, 2.0], perturbations=[
            dict(type='UniModalFGM', modality='visual'),
            dict(type='UniModalPGD', modality='visual', steps=10)]))
    assert [w.name for w in worst] == ['worst_visual@1.0', 'worst_visual@2.0']
    assert worst[1].perturbations[1].steps == 10
    assert worst[1].perturbations[1].eps == 2.0
    A.check_modalities(atks, ToyAV.modalities)


@pytest.mark.parametrize('cfgs,match', [
    ([dict(type='PGD', eps=1.0)], r"'PGD'.*UniModalPGD"),
    ([dict(eps=1.0)], 'type None'),
    ([dict(type='UniModalPGD', modality='audio', eps=[0.5, -0.5])], '-0.5'),
    ([dict(type='GaussianNoise', sigma=[-1.0])], '-1.0'),
    ([dict(type='UniModalPGD', modality='audio', eps=[])], 'empty'),
    ([dict(type='UniModalPGD', modality='audio', eps=0.5),
      dict(type='UniModalPGD', modality='audio', eps=0.5, steps=10)],
     r"duplicate.*pgd_audio@0.5"),
    ([dict(type='UniModalPGD', modality='audio', eps=[1, 2], name='x')],
     'list of names'),
    ([dict(type='UniModalPGD', modality='audio', epsilon=1.0)], 'epsilon'),
    ([dict(type='WorstCase', modality='audio')], 'perturbations'),
    ([dict(type='WorstCase', eps=1.0, stepz=3)], 'stepz'),
    (['pgd'], 'dict'),
])
def test_builder_errors(cfgs, match):
    with pytest.raises(ValueError, match=match):
        A.build_perturbations(cfgs)


def test_check_modalities():
    atks = A.build_perturbations([
        dict(type='UniModalPGD', modality='audoi', eps=1.0),
        dict(type='WorstCase', modality='flow', eps=1.0)])
    with pytest.raises(A.UnknownModalityError,
                       match=r"'pgd_audoi@1.0'.*'audoi'.*visual"):
        A.check_modalities(atks[:1], ToyAV.modalities)
    with pytest.raises(ValueError, match="'flow'"):
        A.check_modalities(atks[1:], ToyAV.modalities)
