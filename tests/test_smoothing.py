"""Randomized-smoothing certifier: statistics against scipy, certificates
against closed forms of linear models, soundness under attacks on the
smoothed classifier, batch/rank invariance."""
import math
import multiprocessing as mp
import os.path as osp
import socket

import numpy as np
import pytest
import torch
from mmaction.registry import TASK_UTILS
from scipy import stats

from crmt_mm.attacks import UnknownModalityError
from crmt_mm.certification import (GaussianSmoothingCertifier,
                                   LateFusionForward, binomial_two_sided_p,
                                   certified_accuracy, clopper_pearson_lower,
                                   noise_seed, sample_indices,
                                   smoothing_forward)
from helpers_smoothing import (LinearFusion, avdigits_inputs,
                               build_avdigits_model, certificate_tuple,
                               ddp_worker, linear_inputs)


def certifier(**kwargs):
    return GaussianSmoothingCertifier(**kwargs)


# ---------------------------------------------------------------- statistics
def grid():
    for n in (1, 2, 3, 10, 57, 1000, 100_000):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for alpha in (1e-6, 1e-3, 0.05, 0.5, 0.9):
                yield k, n, alpha


def test_clopper_pearson_equals_scipy_beta_quantile():
    for k, n, alpha in grid():
        bound = float(clopper_pearson_lower(k, n, alpha))
        expected = 0.0 if k == 0 else stats.beta.ppf(alpha, k, n - k + 1)
        assert bound == expected, (k, n, alpha)
        if k == n:  # closed form of Beta(n, 1): alpha ** (1 / n)
            assert bound == pytest.approx(alpha ** (1 / n), rel=1e-12)
        if 0 < k:  # the definition: P(Bin(n, bound) >= k) = alpha
            assert stats.binom.sf(k - 1, n, bound) == pytest.approx(
                alpha, rel=1e-6)
    ks = np.array([0, 3, 10])
    assert clopper_pearson_lower(torch.tensor(ks), 10, 0.01).tolist() == \
        clopper_pearson_lower(ks, np.array([10, 10, 10]), 0.01).tolist()


@pytest.mark.parametrize('bad', [dict(k=3, n=2, alpha=0.1),
                                 dict(k=-1, n=2, alpha=0.1),
                                 dict(k=1, n=0, alpha=0.1),
                                 dict(k=1.5, n=3, alpha=0.1),
                                 dict(k=1, n=3, alpha=0.0),
                                 dict(k=1, n=3, alpha=1.0)])
def test_clopper_pearson_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        clopper_pearson_lower(**bad)


def test_binomial_p_value_equals_scipy_binomtest():
    for n in (1, 2, 5, 10, 11, 200, 4001):
        for k in sorted({0, 1, n // 2, (n + 1) // 2, n - 1, n}):
            assert float(binomial_two_sided_p(k, n)) == pytest.approx(
                stats.binomtest(k, n, 0.5).pvalue, rel=1e-9, abs=1e-300)


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize('kwargs, key', [
    (dict(sigma=0), 'sigma'), (dict(sigma=-1.0), 'sigma'),
    (dict(sigma=math.inf), 'sigma'), (dict(sigma=True), 'sigma'),
    (dict(sigma={}), 'sigma'), (dict(sigma=dict(audio=0.0)), 'sigma'),
    (dict(modality='audio', sigma=dict(audio=0.5)), 'sigma'),
    (dict(n0=0), 'n0'), (dict(n=2.5), 'n'), (dict(alpha=0), 'alpha'),
    (dict(alpha=1), 'alpha'), (dict(batch_size=0), 'batch_size'),
    (dict(seed=-1), 'seed'), (dict(modality=''), 'modality')])
def test_invalid_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        certifier(**kwargs)


def test_registry_build_describe_and_unknown_key():
    built = TASK_UTILS.build(dict(type='GaussianSmoothingCertifier',
                                  modality='audio', sigma=0.25, n=1000))
    assert isinstance(built, GaussianSmoothingCertifier)
    info = built.describe()
    assert info['label'] == ('sound w.p. 1 - alpha (smoothed classifier, '
                             'sigma=0.25, N=1000, alpha=0.001)')
    assert (info['name'], info['scope'], info['n0']) == (
        'smoothing_audio@0.25', 'audio', 64)
    joint = certifier(modality=None, sigma=dict(visual=0.1, audio=0.5))
    assert joint.name == 'smoothing_visual@0.1+audio@0.5'
    assert 'visual=0.1, audio=0.5' in joint.describe()['label']
    assert certifier(modality='joint').name == 'smoothing_joint@0.25'
    with pytest.raises(TypeError, match="did you mean 'sigma'"):
        TASK_UTILS.build(dict(type='GaussianSmoothingCertifier', sgma=0.5))


def test_modalities_and_calls_are_checked():
    model = LinearFusion(dict(visual=2, audio=3))
    x = linear_inputs(dict(visual=2, audio=3), 2, 0)
    with pytest.raises(UnknownModalityError, match='sound'):
        certifier(modality='sound').check_modalities(model.modalities)
    with pytest.raises(UnknownModalityError, match='visual'):
        certifier(modality=None, sigma=dict(audio=1.0)).check_modalities(
            model.modalities)
    with pytest.raises(UnknownModalityError, match='sound'):
        certifier(modality='sound').certify(model.fused_logits, x, [0, 1])
    with pytest.raises(UnknownModalityError, match='sigma covers'):
        certifier(modality=None, sigma=dict(audio=1.0)).certify(
            model.fused_logits, x, [0, 1])
    with pytest.raises(ValueError, match='sample_idx'):
        certifier().certify(model.fused_logits, x, [0])
    with pytest.raises(ValueError, match='sample_idx'):
        certifier().certify(model.fused_logits, x, [0, -1])
    with pytest.raises(ValueError, match='batch size'):
        certifier().certify(model.fused_logits,
                            dict(x, audio=x['audio'][:1]), [0, 1])
    model.train()
    with pytest.raises(ValueError, match='eval mode'):
        certifier().certify(model.fused_logits, x, [0, 1])


def test_sample_indices_from_the_avdigits_pipeline(avdigits_tiny):
    import crmt_mm  # noqa: F401
    from mmaction.registry import DATASETS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from helpers import config_path, point_to_avdigits
    init_default_scope('mmaction')
    cfg = point_to_avdigits(Config.fromfile(config_path('crmt_avdigits.py')),
                            avdigits_tiny)
    dataset_cfg = cfg.test_dataloader.dataset
    dataset_cfg.pipeline[-1]['meta_keys'] = ('img_shape', )
    dataset = DATASETS.build(dataset_cfg)
    with pytest.raises(KeyError, match="meta_keys=\\(..., 'sample_idx'\\)"):
        sample_indices([dataset[0]['data_samples']])
    dataset_cfg.pipeline[-1]['meta_keys'] = ('img_shape', 'sample_idx')
    dataset = DATASETS.build(dataset_cfg)
    assert sample_indices([dataset[i]['data_samples']
                           for i in (4, 0, 7)]) == [4, 0, 7]


def test_noise_seed_streams_differ():
    seeds = {noise_seed(s, i, t) for s in (0, 1) for i in (0, 1, 2)
             for t in (0, 1, 2)}
    assert len(seeds) == 18 and all(0 <= s < 2 ** 64 for s in seeds)


# ---------------------------------------------------------------- closed form
def pick(model, dims, sigmas, count, lo=0.6, hi=0.995, seed=1):
    """``count`` random points whose exact smoothed probability is in
    [lo, hi] (informative certificates)."""
    x = linear_inputs(dims, 400, seed, scale=0.5)
    _, p = model.smoothed(x, sigmas)
    keep = np.flatnonzero((p >= lo) & (p <= hi))[:count]
    assert keep.size == count
    return {m: v[keep] for m, v in x.items()}


def check_against_closed_form(cert, p_true, cls_true, n, sigma_min):
    se = np.sqrt(p_true * (1 - p_true) / n)
    freq = cert.count.numpy() / n
    assert np.all(np.abs(freq - p_true) <= 5 * se + 1e-12)
    assert cert.selected.tolist() == cls_true.tolist()
    p_lower = cert.p_lower.numpy()
    assert np.all(p_lower <= p_true)
    exact = sigma_min * stats.norm.ppf(p_true)
    radius = cert.radius.numpy()
    assert np.all(radius <= exact)
    # Close: the bound is within a few standard errors of p_true.
    near = sigma_min * stats.norm.ppf(np.maximum(p_true - 9 * se, 0.5))
    assert np.all(radius >= near)


def test_unimodal_linear_matches_closed_form():
    dims = dict(visual=3, audio=5)
    model = LinearFusion(dims, seed=2)
    x = pick(model, dims, dict(audio=0.4), 10)
    n = 20_000
    cert = certifier(modality='audio', sigma=0.4, n0=100, n=n,
                     batch_size=5000, seed=7).certify(
        model.fused_logits, x, list(range(10)))
    cls, p = model.smoothed(x, dict(audio=0.4))
    check_against_closed_form(cert, p, cls, n, 0.4)
    assert (cert.prediction == cert.selected).all()  # all p >= 0.6
    # sigma * Phi^-1(p) is the exact distance to the decision boundary.
    distance = np.abs(model.margin(x)) / np.linalg.norm(model.diff('audio'))
    assert np.allclose(0.4 * stats.norm.ppf(p), distance)
    assert list(cert.modality_radii) == ['audio']
    assert torch.equal(cert.modality_radii['audio'], cert.radius)


def test_anisotropic_joint_radius_against_closed_form():
    dims = dict(visual=4, audio=3)
    sigmas = dict(visual=0.3, audio=0.9)
    model = LinearFusion(dims, seed=3)
    x = pick(model, dims, sigmas, 10)
    n = 20_000
    cert = certifier(modality=None, sigma=sigmas, n0=100, n=n,
                     batch_size=4000, seed=1).certify(
        model.fused_logits, x, list(range(10)))
    cls, p = model.smoothed(x, sigmas)
    check_against_closed_form(cert, p, cls, n, 0.3)
    z = stats.norm.ppf(cert.p_lower.numpy())
    for m, s in sigmas.items():
        assert np.allclose(cert.modality_radii[m].numpy(), s * z)
    assert np.allclose(cert.radius.numpy(), min(sigmas.values()) * z)

    # The base (and smoothed) classifier flips where the margin reaches 0.
    margin = model.margin(x)
    w = {m: model.diff(m) for m in dims}
    joint = np.abs(margin) / np.sqrt(sum(np.sum(v ** 2) for v in w.values()))
    assert np.all(cert.radius.numpy() <= joint)
    for m in dims:
        assert np.all(cert.modality_radii[m].numpy() <=
                      np.abs(margin) / np.linalg.norm(w[m]))

    # Tightness of the ellipsoid sum_m ||d_m||^2 / s_m^2 < rho^2: its most
    # harmful point d_m ~ s_m^2 w_m lowers the margin by rho * scale.
    scale = np.sqrt(sum(s ** 2 * np.sum(w[m] ** 2)
                        for m, s in sigmas.items()))

    def shifted(rho):
        d = {m: torch.from_numpy(-np.sign(margin)[:, None] * rho[:, None] *
                                 s ** 2 * w[m][None] / scale)
             for m, s in sigmas.items()}
        ellipsoid = sum(v.pow(2).sum(1) / sigmas[m] ** 2
                        for m, v in d.items())
        assert np.allclose(ellipsoid.sqrt().numpy(), rho)
        return model.margin({m: x[m] + d[m] for m in dims})

    inside = shifted(0.999 * z)
    assert np.all(np.sign(inside) == np.sign(margin))
    beyond = shifted(1.001 * stats.norm.ppf(p))
    assert np.all(np.sign(beyond) != np.sign(margin))


def test_isotropic_joint_noise_uses_every_modality():
    dims = dict(visual=2, audio=2)
    model = LinearFusion(dims, seed=4)
    x = pick(model, dims, dict(visual=0.5, audio=0.5), 4)
    cert = certifier(modality='joint', sigma=0.5, n0=50, n=20_000,
                     batch_size=20_000).certify(model.fused_logits, x,
                                                [0, 1, 2, 3])
    cls, p = model.smoothed(x, dict(visual=0.5, audio=0.5))
    check_against_closed_form(cert, p, cls, 20_000, 0.5)
    assert sorted(cert.modality_radii) == ['audio', 'visual']


def test_abstains_on_the_decision_boundary():
    dims = dict(audio=3)
    model = LinearFusion(dims, seed=5)
    w = torch.from_numpy(model.diff('audio'))
    b = float((model.bias[0] - model.bias[1]).detach())
    on_boundary = (-b * w / w.dot(w))[None]  # margin exactly 0
    x = dict(audio=on_boundary.repeat(3, 1))
    smoothing = certifier(modality='audio', sigma=1.0, n0=64, n=2000)
    cert = smoothing.certify(model.fused_logits, x, [0, 1, 2])
    assert cert.prediction.tolist() == [-1, -1, -1]
    assert cert.radius.tolist() == [0.0, 0.0, 0.0]
    assert all(v.tolist() == [0.0] * 3 for v in cert.modality_radii.values())
    assert (cert.p_lower <= 0.5).all()
    assert certified_accuracy(cert, [0, 1, 0], [0.0]) == [0.0]
    predicted = smoothing.predict(model.fused_logits, x, [0, 1, 2])
    assert predicted.prediction.tolist() == [-1, -1, -1]
    assert (predicted.counts.sum(1) == 2000).all()


def test_predict_p_value_and_class():
    dims = dict(audio=4)
    model = LinearFusion(dims, num_classes=3, seed=6)
    x = linear_inputs(dims, 6, 2)
    predicted = certifier(modality='audio', sigma=0.3, n=1000,
                          alpha=0.01).predict(model.fused_logits, x,
                                              list(range(6)))
    counts = predicted.counts.numpy()
    for row, p_value, cls in zip(counts, predicted.p_value.tolist(),
                                 predicted.prediction.tolist()):
        top = np.argsort(-row, kind='stable')[:2]
        expected = stats.binomtest(int(row[top[0]]),
                                   int(row[top].sum()), 0.5).pvalue
        assert p_value == pytest.approx(expected, rel=1e-9)
        assert cls == (top[0] if p_value <= 0.01 else -1)


# ---------------------------------------------------------------- soundness
def test_soundness_binary_linear_exact():
    """The smoothed classifier of a 2-class linear f is sign(margin): the
    exact smallest flipping perturbation is |margin| / ||w||."""
    dims = dict(audio=6)
    model = LinearFusion(dims, seed=8)
    x = linear_inputs(dims, 120, 3, scale=0.6)
    norm = np.linalg.norm(model.diff('audio'))
    margin = model.margin(x)
    distance = np.abs(margin) / norm
    truth = (margin < 0).astype(np.int64)
    smoothing = certifier(modality='audio', sigma=0.5, n0=64, n=512,
                          batch_size=576, alpha=0.001, seed=11)
    cert = smoothing.certify(model.fused_logits, x, list(range(120)))
    certified = (cert.prediction >= 0).numpy()
    assert certified.sum() >= 60
    assert np.array_equal(cert.prediction.numpy()[certified],
                          truth[certified])
    assert np.all(cert.radius.numpy() <= distance)
    # The worst perturbation inside the ball (towards the boundary) and the
    # Monte-Carlo smoothed prediction there.
    keep = np.flatnonzero(certified)
    step = -np.sign(margin[keep])[:, None] * model.diff('audio')[None] / norm
    attacked = dict(audio=x['audio'][keep] + torch.from_numpy(
        0.999 * cert.radius.numpy()[keep, None] * step))
    assert np.all(np.sign(model.margin(attacked)) == np.sign(margin[keep]))
    mc = certifier(modality='audio', sigma=0.5, n=4000,
                   batch_size=4000).predict(model.fused_logits, attacked,
                                            keep.tolist())
    flipped = (mc.prediction >= 0) & (mc.prediction !=
                                      cert.prediction[keep])
    assert not flipped.any()


def test_coverage_at_the_stated_alpha():
    """At alpha = 0.05 the bound fails on at most about 5% of the samples
    (a binomial test), and the certified radius exceeds the exact one only
    when it fails."""
    dims = dict(audio=3)
    model = LinearFusion(dims, seed=9)
    x = linear_inputs(dims, 400, 4, scale=0.4)
    cls, p = model.smoothed(x, dict(audio=0.5))
    cert = certifier(modality='audio', sigma=0.5, n0=32, n=200,
                     batch_size=232, alpha=0.05, seed=5).certify(
        model.fused_logits, x, list(range(400)))
    right = cert.selected.numpy() == cls
    # P(f(x + delta) = selected), exact; the bound fails when it is above.
    p_selected = np.where(right, p, 1 - p)
    failures = cert.p_lower.numpy() > p_selected
    certified = cert.prediction.numpy() >= 0
    violations = certified & (~right | (cert.radius.numpy() >
                                        0.5 * stats.norm.ppf(p)))
    assert np.array_equal(violations, certified & failures)
    assert failures.sum() > 0  # not vacuous: 14 of 400 with these seeds
    assert stats.binom.sf(failures.sum() - 1, 400, 0.05) > 1e-3


def smoothed_probability_3class(model, x, cls, sigma):
    """Exact P(f(x + delta) = cls) for a 3-class linear f (bivariate
    normal orthant probability of the two logit differences)."""
    W = model.weights['audio'].detach().numpy()
    b = model.bias.detach().numpy()
    others = [j for j in range(3) if j != cls]
    A = W[cls][None] - W[others]
    mean = x @ A.T + (b[cls] - b[others])
    cov = sigma ** 2 * A @ A.T
    return np.array([stats.multivariate_normal.cdf(
        np.zeros(2), mean=-mu, cov=cov, abseps=1e-8, releps=1e-8)
        for mu in mean])


def test_soundness_three_class_linear_under_attack():
    """No attack within the certified radius makes the exact smoothed
    probability of the certified class drop to 1/2 (Cohen et al.'s bound
    Phi(Phi^-1(p_lower) - ||d|| / sigma) holds at every attacked point)."""
    dims = dict(audio=4)
    sigma = 0.5
    model = LinearFusion(dims, num_classes=3, seed=10)
    x = linear_inputs(dims, 40, 6, scale=0.8)
    cert = certifier(modality='audio', sigma=sigma, n0=64, n=1000,
                     batch_size=1064, seed=2).certify(
        model.fused_logits, x, list(range(40)))
    keep = np.flatnonzero(cert.prediction.numpy() >= 0)
    assert keep.size >= 10
    W = model.weights['audio'].detach().numpy()
    g = np.random.default_rng(0)
    for i in keep:
        c, radius = int(cert.prediction[i]), float(cert.radius[i])
        z = stats.norm.ppf(float(cert.p_lower[i]))
        # Directions towards each competitor's boundary, and random ones.
        toward = [-(W[c] - W[j]) for j in range(3) if j != c]
        directions = np.concatenate([np.array(toward),
                                     g.standard_normal((30, 4))])
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        for fraction in (0.5, 0.9):
            points = x['audio'][i].numpy() + fraction * radius * directions
            p = smoothed_probability_3class(model, points, c, sigma)
            bound = stats.norm.cdf(z - fraction * radius / sigma)
            assert np.all(p >= bound - 1e-6)
            assert np.all(p > 0.5)


# ---------------------------------------------------------------- invariance
#: Tiny settings on the AV-Digits model: forwards of 4, 8 and 4 copies (a
#: shorter last chunk); sigma large enough that the counts vary.
SETTINGS = dict(modality='audio', sigma=2.0, n0=4, n=12, batch_size=8,
                seed=3)


def test_results_do_not_depend_on_batch_grouping():
    model = build_avdigits_model()
    x = avdigits_inputs(model, 4)
    indices = [10, 11, 12, 13]
    smoothing = certifier(**SETTINGS)
    whole = smoothing.certify(model.fused_logits, x, indices).records()
    records = {}
    for group in ([3], [2, 0], [1]):  # other groups, other order
        part = {m: v[group] for m, v in x.items()}
        got = smoothing.certify(model.fused_logits, part,
                                [indices[i] for i in group]).records()
        records.update(zip(group, got))
    assert [records[i] for i in range(4)] == whole
    # Joint noise: the order of the modality dict does not matter either.
    joint = certifier(**dict(SETTINGS, modality=None,
                             sigma=dict(visual=0.5, audio=2.0)))
    pair = {m: v[:2] for m, v in x.items()}
    forward = joint.certify(model.fused_logits, pair, indices[:2])
    backward = joint.certify(model.fused_logits,
                             dict(reversed(list(pair.items()))), indices[:2])
    assert certificate_tuple(forward) == certificate_tuple(backward)


def test_late_fusion_forward_equals_the_full_forward():
    """Fixing the clean branches once per sample certifies and predicts
    like the full forward (uni-modal noise on either modality), and joint
    noise, with nothing to fix, takes the plain path."""
    model = build_avdigits_model()
    x = avdigits_inputs(model, 3)
    indices = [4, 5, 6]
    cached = smoothing_forward(model)
    assert isinstance(cached, LateFusionForward)
    assert not LateFusionForward.supports(LinearFusion(dict(audio=4)))
    clean = {m: t[:1] for m, t in x.items() if m != 'audio'}
    with torch.no_grad():
        noisy = {'audio': x['audio'][:1].repeat(5, 1, 1, 1, 1)}
        assert torch.allclose(
            cached.fix(clean)(noisy),
            model.fused_logits(dict(clean, **{
                m: t.expand((5,) + t.shape[1:]) for m, t in clean.items()},
                audio=noisy['audio'])), atol=1e-5)
    for modality in ('audio', 'visual', None):
        smoothing = certifier(**dict(SETTINGS, modality=modality))
        full = smoothing.certify(model.fused_logits, x, indices)
        fast = smoothing.certify(cached, x, indices)
        assert certificate_tuple(fast) == certificate_tuple(full)
        assert torch.equal(smoothing.predict(cached, x, indices).counts,
                           smoothing.predict(model.fused_logits, x,
                                             indices).counts)
    model.train()
    with pytest.raises(ValueError, match='training mode'):
        certifier(**SETTINGS).certify(cached, x, indices)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_gloo_equals_one_process(tmp_path):
    """Rank r certifies samples r::2 of a 3-sample list; the gathered
    records equal one process certifying all three (one thread each, as
    under tools/dist_test.sh with OMP_NUM_THREADS=1)."""
    indices = [10, 3, 7]
    out = str(tmp_path / 'ddp.pt')
    context = mp.get_context('spawn')
    port = free_port()
    workers = [context.Process(target=ddp_worker, args=(
        rank, 2, port, SETTINGS, indices, out)) for rank in range(2)]
    for worker in workers:
        worker.start()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_avdigits_model()
        x = avdigits_inputs(model, len(indices))
        single = certifier(**SETTINGS).certify(model.fused_logits, x,
                                               indices)
    finally:
        torch.set_num_threads(threads)
    for worker in workers:
        worker.join(timeout=240)
    assert [w.exitcode for w in workers] == [0, 0]
    assert osp.exists(out)
    assert torch.load(out) == single.records()
