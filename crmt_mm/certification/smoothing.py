"""Sound L2 certificates by Gaussian randomized smoothing.

The smoothed classifier of a base classifier ``f`` (here: the argmax of a
model's fused logits) is ``g(x) = argmax_c P(f(x + delta) = c)`` with Gaussian
``delta``. CERTIFY and PREDICT of Cohen, Rosenfeld & Kolter, "Certified
Adversarial Robustness via Randomized Smoothing" (ICML 2019) estimate ``g``
by Monte Carlo; a certificate is sound for ``g`` (not for ``f``) with
probability at least ``1 - alpha`` over the noise draws. The structure of
the procedures follows the authors' reference implementation
(github.com/locuslab/smoothing, ``core.py``); the per-sample seeding, the
per-modality noise and the anisotropic radius are crmt_mm's. The maths and
its derivation are in ``docs/certification.md``.

Everything is plain torch + scipy except the registration into mmaction2's
``TASK_UTILS`` registry, so that configs can name the certifier by ``type``
(``TASK_UTILS.build(dict(type='GaussianSmoothingCertifier', ...))``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from mmaction.registry import TASK_UTILS
from scipy import stats
from torch import Tensor, nn

from crmt_mm.attacks.base import (ForwardFn, UnknownModalityError,
                                  check_modality_name, check_positive_int,
                                  format_value)
from crmt_mm.utils import reject_unknown_keys

__all__ = [
    'GaussianSmoothingCertifier', 'Certificate', 'SmoothedPrediction',
    'clopper_pearson_lower', 'binomial_two_sided_p', 'sample_indices',
    'certified_accuracy', 'noise_seed', 'LateFusionForward',
    'smoothing_forward'
]

#: ``modality`` values that select joint noise on every modality.
JOINT = (None, 'joint')
#: Independent noise streams of one sample: selection (n0), estimation (n)
#: and PREDICT draws never share a generator.
SELECTION, ESTIMATION, PREDICTION = 0, 1, 2


# ---------------------------------------------------------------- statistics
def clopper_pearson_lower(k, n, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower confidence bound of a binomial p.

    ``P(p >= bound) >= 1 - alpha`` for ``k`` successes in ``n`` trials: the
    ``alpha`` quantile of ``Beta(k, n - k + 1)``, and 0 for ``k = 0`` (where
    that Beta distribution is undefined). Cohen et al. write it as the
    lower end of the two-sided interval at level ``2 alpha``.

    Args:
        k (int | array | Tensor): successes, ``0 <= k <= n``.
        n (int | array | Tensor): trials, ``>= 1``; broadcasts against k.
        alpha (float): in (0, 1).

    Returns:
        np.ndarray: float64 bounds in [0, 1), shaped like ``k`` and ``n``
        broadcast.
    """
    if not 0 < alpha < 1:
        raise ValueError(f'alpha must be in (0, 1), got {alpha!r}')
    k, n = np.broadcast_arrays(_as_counts(k, 'k'), _as_counts(n, 'n'))
    if np.any(n < 1) or np.any(k > n):
        raise ValueError('clopper_pearson_lower needs 0 <= k <= n and n >= 1,'
                         f' got k={k.tolist()}, n={n.tolist()}')
    bound = np.zeros(k.shape, dtype=np.float64)
    hit = k > 0
    bound[hit] = stats.beta.ppf(alpha, k[hit], n[hit] - k[hit] + 1)
    return bound


def binomial_two_sided_p(k, n) -> np.ndarray:
    """Two-sided p-value of ``k`` successes in ``n`` trials at p = 1/2.

    The distribution is symmetric, so the two-sided p-value (the mass of
    outcomes no more likely than ``k``) is ``min(1, 2 P(X <= min(k, n-k)))``;
    equal to ``scipy.stats.binomtest(k, n, 0.5).pvalue``.

    Args:
        k (int | array | Tensor): successes, ``0 <= k <= n``.
        n (int | array | Tensor): trials, ``>= 1``.

    Returns:
        np.ndarray: float64 p-values in (0, 1].
    """
    k, n = np.broadcast_arrays(_as_counts(k, 'k'), _as_counts(n, 'n'))
    if np.any(n < 1) or np.any(k > n):
        raise ValueError('binomial_two_sided_p needs 0 <= k <= n and n >= 1,'
                         f' got k={k.tolist()}, n={n.tolist()}')
    tail = stats.binom.cdf(np.minimum(k, n - k), n, 0.5)
    return np.minimum(1.0, 2.0 * tail)


def _as_counts(value, what: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in 'iu' or np.any(array < 0):
        raise ValueError(f'{what} must hold integers >= 0, got {value!r}')
    return array.astype(np.int64)


# ---------------------------------------------------------------- seeding
def noise_seed(seed: int, sample_idx: int, stream: int) -> int:
    """64-bit generator seed of one sample's noise stream.

    numpy's ``SeedSequence`` hashes ``(seed, sample_idx, stream)`` so that
    nearby indices and seeds give unrelated streams (``seed + idx`` would
    make sample 1 of seed 0 share noise with sample 0 of seed 1).

    Args:
        seed (int): the certifier's global seed, >= 0.
        sample_idx (int): the sample's dataset index, >= 0.
        stream (int): 0 selection, 1 estimation, 2 prediction.

    Returns:
        int: in ``[0, 2**64)``, for ``torch.Generator.manual_seed``.
    """
    state = np.random.SeedSequence(seed, spawn_key=(sample_idx, stream))
    return int(state.generate_state(1, np.uint64)[0])


def sample_indices(data_samples: Sequence) -> List[int]:
    """Dataset indices of a batch's data samples (their ``sample_idx``).

    mmengine's ``BaseDataset.get_data_info`` stores every sample's dataset
    index as ``sample_idx``; mmaction2's ``PackActionInputs`` copies it into
    the data sample's metainfo only if it is among its ``meta_keys``.

    Args:
        data_samples (Sequence[ActionDataSample]): one batch.

    Returns:
        list[int]: one index per sample.

    Raises:
        KeyError: a sample has no ``sample_idx``; the message names the fix.
    """
    out = []
    for position, sample in enumerate(data_samples):
        meta = getattr(sample, 'metainfo', {})
        if 'sample_idx' not in meta:
            raise KeyError(
                f'data sample {position} has no sample_idx in its metainfo, '
                'but randomized smoothing seeds each sample\'s noise by its '
                "dataset index: add 'sample_idx' to the test pipeline's "
                "PackActionInputs(meta_keys=(..., 'sample_idx'))")
        out.append(int(meta['sample_idx']))
    return out


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class Certificate:
    """CERTIFY's result for a batch; CPU tensors, one row per sample.

    Attributes:
        prediction (Tensor): ``[B]`` int64, the certified class or -1 when
            CERTIFY abstains (``p_lower <= 1/2``).
        radius (Tensor): ``[B]`` float64, the largest L2 ball (normalised
            input space, over the noised modalities) on which the smoothed
            classifier is certified to predict ``prediction``; 0 when it
            abstains (an abstention certifies nothing; every non-abstained
            radius is > 0).
        modality_radii (dict[str, Tensor]): ``{m: [B]}``, the certified
            radius for perturbations of modality ``m`` alone:
            ``sigma_m * Phi^-1(p_lower)`` (0 on abstention). For a uni-modal
            certificate only the noised modality, equal to ``radius``.
        p_lower (Tensor): ``[B]`` float64, the Clopper-Pearson lower bound
            of ``P(f(x + delta) = selected)``.
        selected (Tensor): ``[B]`` int64, the class chosen by the n0
            selection draws (reported even when abstaining).
        count (Tensor): ``[B]`` int64, hits of ``selected`` in the n
            estimation draws.
        counts (Tensor): ``[B, K]`` int64, estimation-draw counts of every
            class.
        n (int): estimation draws per sample.
    """

    prediction: Tensor
    radius: Tensor
    modality_radii: Dict[str, Tensor]
    p_lower: Tensor
    selected: Tensor
    count: Tensor
    counts: Tensor
    n: int

    def records(self) -> List[dict]:
        """One plain-Python dict per sample (for data-sample records)."""
        names = list(self.modality_radii)
        per_modality = torch.stack([self.modality_radii[m] for m in names],
                                   1).tolist()
        return [dict(prediction=p, radius=r, p_lower=q, selected=s, count=c,
                     n=self.n, modality_radii=dict(zip(names, mr)))
                for p, r, q, s, c, mr in zip(
                    self.prediction.tolist(), self.radius.tolist(),
                    self.p_lower.tolist(), self.selected.tolist(),
                    self.count.tolist(), per_modality)]


@dataclass(frozen=True)
class SmoothedPrediction:
    """PREDICT's result for a batch; CPU tensors, one row per sample.

    Attributes:
        prediction (Tensor): ``[B]`` int64, the top class or -1 when the
            two-sided binomial test of the top two counts gives a p-value
            > alpha (abstain).
        p_value (Tensor): ``[B]`` float64, that p-value.
        counts (Tensor): ``[B, K]`` int64, counts of every class over the
            n draws.
    """

    prediction: Tensor
    p_value: Tensor
    counts: Tensor


def certified_accuracy(certificate: Certificate, labels,
                       radii: Sequence[float],
                       modality: Optional[str] = None) -> List[float]:
    """Fraction of samples certified correct beyond each radius R.

    A sample counts at R when the smoothed prediction equals the label and
    its certified radius is > R (the certificate covers ``||delta|| <
    radius``); abstentions never count.

    Args:
        certificate (Certificate): from :meth:`GaussianSmoothingCertifier.
            certify`.
        labels (Sequence[int] | Tensor): ``[B]`` ground truth.
        radii (Sequence[float]): budgets R >= 0.
        modality (str, optional): use ``modality_radii[modality]`` instead
            of the joint ``radius``. Defaults to None.

    Returns:
        list[float]: one accuracy per R (NaN for an empty batch).
    """
    labels = torch.as_tensor(labels).cpu().long()
    radius = certificate.radius if modality is None \
        else certificate.modality_radii[modality]
    correct = certificate.prediction == labels
    if labels.numel() == 0:
        return [math.nan for _ in radii]
    return [float((correct & (radius > r)).double().mean()) for r in radii]


# ------------------------------------------------------ late-fusion forward
class LateFusionForward:
    """``model.fused_logits`` of a late-fusion recognizer whose clean
    modalities can be fixed for the noise copies of one sample.

    A uni-modal certificate noises one modality; for a model that encodes
    each modality on its own and fuses the uni-modal logits
    (:class:`~crmt_mm.models.CRMTRecognizer`: ``encoders``,
    ``unimodal_logits``, ``fuse``) the other branches see the same clean
    input in every copy. :meth:`fix` computes their features once per
    sample, so each noisy forward runs the noised branches only. The result
    is the same function as ``fused_logits`` (the clean features are
    broadcast to the copies instead of recomputed).

    Args:
        model (nn.Module): the recognizer, in eval mode.
    """

    def __init__(self, model) -> None:
        self.model = model

    @staticmethod
    def supports(model) -> bool:
        """True if ``model`` has per-modality encoders and additive
        fusion of their logits."""
        return all(hasattr(model, name) for name in
                   ('encoders', 'unimodal_logits', 'fuse', 'fused_logits'))

    def __call__(self, x: Mapping[str, Tensor]) -> Tensor:
        return self.model.fused_logits(x)

    def fix(self, clean: Mapping[str, Tensor]) -> ForwardFn:
        """A forward over the other modalities with ``clean`` fixed.

        Args:
            clean (dict[str, Tensor]): ``{m: [1, ...]}`` one sample's clean
                inputs of the modalities left noise-free.

        Returns:
            callable: ``forward(noisy) -> [b, K]`` fused logits, ``noisy``
            holding ``[b, ...]`` inputs of every other modality.
        """
        model = self.model
        fixed = {m: model.encoders[m](t) for m, t in clean.items()}

        def forward(noisy: Mapping[str, Tensor]) -> Tensor:
            feats = {m: model.encoders[m](t) for m, t in noisy.items()}
            size = next(iter(noisy.values())).shape[0]
            feats.update({m: f.expand((size,) + f.shape[1:])
                          for m, f in fixed.items()})
            return model.fuse(model.unimodal_logits(feats))
        return forward


def smoothing_forward(model):
    """The forward to certify ``model`` with: a :class:`LateFusionForward`
    when the model supports it, else ``model.fused_logits``."""
    return LateFusionForward(model) if LateFusionForward.supports(model) \
        else model.fused_logits


# ---------------------------------------------------------------- certifier
@TASK_UTILS.register_module()
@reject_unknown_keys
class GaussianSmoothingCertifier:
    """Randomized-smoothing certifier (CERTIFY / PREDICT of Cohen et al.).

    Smooths the base classifier ``argmax forward(x)`` with Gaussian noise
    on one modality (the others clean: a uni-modal certificate that bounds
    perturbations of that modality only) or on all modalities (a joint
    certificate; a per-modality ``sigma`` dict makes the noise
    anisotropic, and the radius is then ``min_m sigma_m * Phi^-1(p_lower)``,
    the largest L2 ball inside the certified ellipsoid; see
    ``docs/certification.md``).

    Note:
        * ``sigma`` and every radius are L2 quantities in the normalised
          input space (the tensors after the data preprocessor, the space
          of the attack budgets), per element of the modality tensor. The
          noisy inputs are not clamped to the valid raw range: clamping
          would be part of the base classifier, and leaving it out keeps
          the base classifier the model itself.
        * Noise is drawn per sample from generators seeded by
          ``(seed, sample_idx, stream)`` on the inputs' device, in chunks
          of ``batch_size`` copies, and each forward holds copies of one
          sample only. A sample's result therefore depends only on its
          inputs, its ``sample_idx``, the settings and the device type,
          never on which other samples share its batch or rank.
        * The model must be in eval mode (batch statistics would couple the
          copies); a ``forward`` bound to a module in training mode is
          rejected. Calls run under ``torch.no_grad``.
        * Cost per sample: ``ceil(n0 / batch_size) + ceil(n / batch_size)``
          forwards of up to ``batch_size`` copies (PREDICT:
          ``ceil(n / batch_size)``).

    Args:
        modality (str, optional): the noised modality, or ``None`` /
            ``'joint'`` for every modality of the inputs. Defaults to
            ``'joint'``.
        sigma (float | dict[str, float]): noise std > 0 (normalised input
            units). A dict ``{modality: sigma_m}`` covering every modality
            is accepted for joint noise only. Defaults to 0.25.
        n0 (int): selection draws of CERTIFY, at most ``n`` (a
            ``ValueError`` otherwise). Defaults to 64.
        n (int): estimation draws of CERTIFY (and PREDICT's draws).
            Defaults to 512.
        alpha (float): failure probability in (0, 1); certificates hold
            with probability >= 1 - alpha. Defaults to 0.001.
        batch_size (int): noisy copies per forward. Part of the protocol:
            it fixes how each noise stream is cut into chunks. Defaults to
            256.
        seed (int): global noise seed >= 0. Defaults to 0.

    Example:
        >>> certifier = dict(type='GaussianSmoothingCertifier',
        ...                  modality='audio', sigma=0.25, n0=64, n=512,
        ...                  alpha=0.001, batch_size=256, seed=0)
        >>> certifier = TASK_UTILS.build(certifier)
        >>> cert = certifier.certify(model.fused_logits, x, sample_idx)
    """

    def __init__(self, modality: Optional[str] = 'joint',
                 sigma: Union[float, Mapping[str, float]] = 0.25,
                 n0: int = 64, n: int = 512, alpha: float = 0.001,
                 batch_size: int = 256, seed: int = 0) -> None:
        self.modality = None if modality in JOINT \
            else check_modality_name(modality)
        self.sigma = self._check_sigma(sigma)
        self.n0 = check_positive_int(n0, 'n0')
        self.n = check_positive_int(n, 'n')
        # n0 only selects the class; the certificate's confidence bound
        # comes from the n draws. More selection than estimation draws is
        # a swap of the two (or a typo), never a useful setting.
        if self.n0 > self.n:
            raise ValueError(
                f'n0={self.n0} (selection draws) exceeds n={self.n} '
                '(estimation draws, the ones the certificate is computed '
                'from); swapped? Use n0 <= n (e.g. n0=64, n=512, or n0=100, '
                'n=100000 as in Cohen et al.).')
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) \
                or not 0 < alpha < 1:
            raise ValueError(f'alpha must be a number in (0, 1), got '
                             f'{alpha!r}')
        self.alpha = float(alpha)
        self.batch_size = check_positive_int(batch_size, 'batch_size')
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
                or seed < 0:
            raise ValueError(f'seed must be an int >= 0, got {seed!r}')
        self.seed = int(seed)

    def _check_sigma(self, sigma) -> Union[float, Dict[str, float]]:
        if isinstance(sigma, Mapping):
            if self.modality is not None:
                raise ValueError(
                    f'sigma={dict(sigma)!r}: a per-modality sigma dict needs '
                    "joint noise (modality=None or 'joint'); for noise on "
                    f'{self.modality!r} only give one number')
            if not sigma:
                raise ValueError('sigma: empty dict; give {modality: '
                                 'sigma} for every modality')
            return {check_modality_name(m, 'sigma key'):
                    _positive(v, f'sigma[{m!r}]') for m, v in sigma.items()}
        return _positive(sigma, 'sigma')

    # ---- description ---------------------------------------------------

    @property
    def scope(self) -> str:
        """The noised modality, or ``'joint'``."""
        return self.modality if self.modality is not None else 'joint'

    @property
    def name(self) -> str:
        """Result key, e.g. ``'smoothing_audio@0.25'`` or
        ``'smoothing_visual@0.1+audio@0.5'`` (per-modality sigma)."""
        if isinstance(self.sigma, dict):
            return 'smoothing_' + '+'.join(
                f'{m}@{format_value(s)}' for m, s in self.sigma.items())
        return f'smoothing_{self.scope}@{format_value(self.sigma)}'

    def describe(self) -> dict:
        """Settings and the protocol label for reports (JSON-ready)."""
        sigma = dict(self.sigma) if isinstance(self.sigma, dict) \
            else self.sigma
        shown = ', '.join(f'{m}={format_value(s)}' for m, s in sigma.items()) \
            if isinstance(sigma, dict) else format_value(sigma)
        return dict(
            kind='smoothing', name=self.name, scope=self.scope,
            label=('sound w.p. 1 - alpha (smoothed classifier, sigma='
                   f'{shown}, N={self.n}, alpha={self.alpha:g})'),
            sigma=sigma, n0=self.n0, n=self.n, alpha=self.alpha,
            batch_size=self.batch_size, seed=self.seed,
            noise_space='normalised input space (after the data '
            'preprocessor), not clamped',
            radius=('min_m sigma_m * Phi^-1(p_lower), L2 over all '
                    'modalities' if self.modality is None else
                    f'sigma * Phi^-1(p_lower), L2 over {self.modality!r} '
                    'only, other modalities clean'),
            abstain='prediction -1, radius 0',
            seeding='per sample from (seed, sample_idx, stream)')

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(modality={self.scope!r}, '
                f'sigma={self.sigma!r}, n0={self.n0}, n={self.n}, '
                f'alpha={self.alpha}, batch_size={self.batch_size}, '
                f'seed={self.seed})')

    def check_modalities(self, modalities: Sequence[str]) -> None:
        """Fail at build time if the settings name a modality the model
        lacks or a sigma dict misses one of the model's modalities.

        Raises:
            UnknownModalityError: naming the modality and the available
                ones.
        """
        available = tuple(modalities)
        named = [self.modality] if self.modality is not None else (
            list(self.sigma) if isinstance(self.sigma, dict) else [])
        for m in named:
            if m not in available:
                raise UnknownModalityError(
                    f'{self.name}: modality {m!r} is not among the model '
                    f'modalities {available}')
        if isinstance(self.sigma, dict):
            missing = [m for m in available if m not in self.sigma]
            if missing:
                raise UnknownModalityError(
                    f'{self.name}: sigma has no entry for modalities '
                    f'{missing}; joint noise needs one per modality '
                    f'{available}')

    # ---- CERTIFY / PREDICT ---------------------------------------------

    def certify(self, forward: ForwardFn, x: Mapping[str, Tensor],
                sample_idx: Union[Sequence[int], Tensor]) -> Certificate:
        """CERTIFY every sample of a batch.

        Args:
            forward (callable): ``forward(x) -> [b, K]`` fused logits of a
                modality dict (e.g. ``model.fused_logits``), model in eval
                mode.
            x (dict[str, Tensor]): normalised inputs ``{m: [B, ...]}``,
                batch first, all on one device.
            sample_idx (Sequence[int] | Tensor): ``[B]`` dataset indices
                (:func:`sample_indices`), which seed each sample's noise.

        Returns:
            Certificate: per-sample results on the CPU.
        """
        indices = self._check_call(forward, x, sample_idx)
        selected, hits, counts = [], [], []
        with torch.no_grad():
            for i, idx in enumerate(indices):
                first = self._counts(forward, x, i, idx, SELECTION, self.n0)
                top = first.argmax()  # ties: the lowest class index
                second = self._counts(forward, x, i, idx, ESTIMATION, self.n)
                selected.append(top)
                # gather, not second[top]: indexing with a 0-d CUDA tensor
                # would read it back to the host on every sample.
                hits.append(second.gather(0, top.reshape(1)).squeeze(0))
                counts.append(second)
        # The only host transfer: the final counts of the whole batch.
        selected = torch.stack(selected).cpu()
        count = torch.stack(hits).cpu()
        counts = torch.stack(counts).cpu()
        p_lower = clopper_pearson_lower(count.numpy(), self.n, self.alpha)
        certified = p_lower > 0.5
        # Phi^-1 of an abstained p_lower is <= 0: mask it to radius 0.
        z = np.where(certified, stats.norm.ppf(np.maximum(p_lower, 0.5)), 0.)
        modality_radii = {m: torch.from_numpy(s * z)
                          for m, s in self._sigmas(x).items()}
        radius = torch.stack(list(modality_radii.values())).min(0).values
        return Certificate(
            prediction=torch.where(torch.from_numpy(certified), selected,
                                   torch.full_like(selected, -1)),
            radius=radius, modality_radii=modality_radii,
            p_lower=torch.from_numpy(p_lower), selected=selected,
            count=count, counts=counts, n=self.n)

    def predict(self, forward: ForwardFn, x: Mapping[str, Tensor],
                sample_idx: Union[Sequence[int], Tensor]
                ) -> SmoothedPrediction:
        """PREDICT every sample: the smoothed class or abstain.

        ``n`` draws (a stream independent of CERTIFY's); the top class A
        is returned when the two-sided binomial test of its count against
        the runner-up's, ``n_A`` out of ``n_A + n_B`` at p = 1/2, gives a
        p-value <= alpha; then A is the smoothed classifier's prediction
        with probability >= 1 - alpha.

        Args:
            forward (callable): as for :meth:`certify`.
            x (dict[str, Tensor]): as for :meth:`certify`.
            sample_idx (Sequence[int] | Tensor): as for :meth:`certify`.

        Returns:
            SmoothedPrediction: per-sample results on the CPU.
        """
        indices = self._check_call(forward, x, sample_idx)
        with torch.no_grad():
            counts = torch.stack([
                self._counts(forward, x, i, idx, PREDICTION, self.n)
                for i, idx in enumerate(indices)]).cpu()
        if counts.shape[1] < 2:  # one class: nothing to compete with
            top = counts.new_zeros(counts.shape[0])
            p_value = torch.zeros(counts.shape[0], dtype=torch.float64)
        else:
            # A stable sort puts the lower class first among equal counts.
            ranked, order = counts.sort(dim=1, descending=True, stable=True)
            pair, top = ranked[:, :2], order[:, 0]
            p_value = torch.from_numpy(binomial_two_sided_p(
                pair[:, 0].numpy(), pair.sum(1).numpy()))
        return SmoothedPrediction(
            prediction=torch.where(p_value <= self.alpha, top,
                                   torch.full_like(top, -1)),
            p_value=p_value, counts=counts)

    # ---- internals -----------------------------------------------------

    def _check_call(self, forward, x, sample_idx) -> List[int]:
        owner = getattr(forward, '__self__', getattr(forward, 'model', None))
        if isinstance(owner, nn.Module) and owner.training:
            raise ValueError(
                f'{self.name}: {type(owner).__name__} is in training mode; '
                'put the model in eval mode before certifying (batch '
                'statistics and dropout would change the base classifier)')
        if not isinstance(x, Mapping) or not x:
            raise ValueError(f'{self.name}: x must be a non-empty dict '
                             f'{{modality: [B, ...]}}, got {type(x)}')
        targets = (self.modality,) if self.modality is not None else \
            tuple(self.sigma) if isinstance(self.sigma, dict) else ()
        for m in targets:
            if m not in x:
                raise UnknownModalityError(
                    f'{self.name}: modality {m!r} is not in the inputs; '
                    f'available modalities: {tuple(x)}')
        if isinstance(self.sigma, dict) and set(x) != set(self.sigma):
            raise UnknownModalityError(
                f'{self.name}: sigma covers {sorted(self.sigma)} but the '
                f'inputs hold {sorted(x)}; joint noise needs one sigma per '
                'input modality')
        sizes = {m: t.shape[0] if t.dim() else None for m, t in x.items()}
        devices = {t.device for t in x.values()}
        if len(set(sizes.values())) != 1 or None in sizes.values() \
                or len(devices) != 1:
            raise ValueError(f'{self.name}: every modality needs the same '
                             f'batch size and device, got sizes {sizes} on '
                             f'{sorted(map(str, devices))}')
        if isinstance(sample_idx, Tensor):
            sample_idx = sample_idx.tolist()
        indices = list(sample_idx)
        batch = next(iter(sizes.values()))
        if len(indices) != batch or any(
                isinstance(i, bool) or not isinstance(i, numbers.Integral)
                or i < 0 for i in indices):
            raise ValueError(
                f'{self.name}: sample_idx must be {batch} dataset indices '
                f'(ints >= 0), one per sample, got {indices!r}')
        return [int(i) for i in indices]

    def _sigmas(self, x: Mapping[str, Tensor]) -> Dict[str, float]:
        """Noise std of every noised modality, in the inputs' order."""
        if self.modality is not None:
            return {self.modality: self.sigma}
        if isinstance(self.sigma, dict):
            return {m: self.sigma[m] for m in x}
        return {m: self.sigma for m in x}

    def _counts(self, forward: ForwardFn, x: Mapping[str, Tensor], i: int,
                idx: int, stream: int, draws: int) -> Tensor:
        """Class counts ``[K]`` of the base classifier over ``draws`` noisy
        copies of sample ``i``, on the inputs' device (no host sync)."""
        sigmas = self._sigmas(x)
        device = next(iter(x.values())).device
        generator = torch.Generator(device=device)
        generator.manual_seed(noise_seed(self.seed, idx, stream))
        size = min(self.batch_size, draws)
        clean_names = [m for m in x if m not in sigmas]
        fix = getattr(forward, 'fix', None)
        if fix is not None and clean_names:
            # Clean branches computed once (LateFusionForward).
            partial = fix({m: x[m][i:i + 1] for m in clean_names})

            def call(noisy, chunk):
                return partial(noisy)
        else:
            # Clean modalities: one contiguous block of copies per sample,
            # sliced for the last (shorter) chunk.
            clean = {m: x[m][i:i + 1].expand(
                (size,) + x[m].shape[1:]).contiguous() for m in clean_names}

            def call(noisy, chunk):
                return forward({m: noisy[m] if m in noisy else
                                clean[m][:chunk] for m in x})
        counts = None
        for start in range(0, draws, size):
            chunk = min(size, draws - start)
            noisy = {}
            # Sorted names fix the draw order whatever the dict order.
            for m in sorted(sigmas):
                t = x[m]
                noise = torch.randn((chunk,) + t.shape[1:],
                                    generator=generator, device=device,
                                    dtype=t.dtype)
                noisy[m] = noise.mul_(sigmas[m]).add_(t[i:i + 1])
            logits = call(noisy, chunk)
            found = torch.bincount(logits.argmax(1),
                                   minlength=logits.shape[1])
            counts = found if counts is None else counts + found
        return counts


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f'{what} must be a finite number > 0, got '
                         f'{value!r}')
    return float(value)
