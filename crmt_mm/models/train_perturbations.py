"""How step-1 training inputs are perturbed: adversarial, mixup or noise.

A training perturbation is the recognizer's ``train_perturbation`` config
entry. It turns a clean training batch into the batch the step-1 loss is
evaluated on, and tells the loss which targets to use (mixup has two). The
loss (:class:`~crmt_mm.models.losses.CRMTMarginLoss`) only sees logits.

Registered types (``TRAIN_PERTURBATIONS``):

- ``'MultiModalPGD'`` (:class:`TrainPGD`): joint L2 PGD on the fused
  cross-entropy, the adversarial training of CRMT-AT and of the MMAT
  baseline.
- ``'Mixup'`` (:class:`TrainMixup`): one mixup coefficient and one
  permutation per batch, shared by all modalities (CRMT-Mix, Mixup
  baseline).
- ``'GaussianNoise'`` (:class:`TrainGaussianNoise`): Gaussian data
  augmentation on one or all modalities, the training that makes
  randomized-smoothing certificates (Cohen, Rosenfeld & Kolter, ICML 2019)
  non-trivial.

The recognizer applies its perturbation in training mode only, so
``loss()`` on a model in eval mode sees clean inputs.
"""
import contextlib
import math
import numbers
from typing import Dict, Iterator, Mapping, NamedTuple, Optional, Sequence

import torch
from mmengine.registry import Registry
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from crmt_mm.attacks import MultiModalPGD
from crmt_mm.utils import reject_unknown_keys

#: Registry of the recognizer's ``train_perturbation`` types.
TRAIN_PERTURBATIONS = Registry('train perturbation', scope='crmt_mm')

#: BatchNorm behaviour while a training attack runs its forward passes.
BN_POLICIES = ('frozen_stats', 'train', 'eval')

#: Loss keys of crmt_mm <= 0.1.0 that moved to ``train_perturbation``.
MOVED_LOSS_KEYS = ('variant', 'at_eps', 'at_steps', 'at_bn', 'at_clamp',
                   'mix_alpha')


class PerturbedBatch(NamedTuple):
    """What a training perturbation hands to the step-1 loss.

    Attributes:
        inputs (dict[str, Tensor]): modality -> perturbed input [B, N, ...].
        labels_b (Tensor, optional): mixup partner targets [B]; None when
            every sample keeps its own target.
        lam (float): weight of the original targets (1.0 without mixup).
    """
    inputs: Dict[str, Tensor]
    labels_b: Optional[Tensor] = None
    lam: float = 1.0


class TrainPerturbation:
    """Base class: ``perturbation(model, x, labels) -> PerturbedBatch``.

    ``model`` is a :class:`~crmt_mm.models.CRMTRecognizer` (its
    ``fused_logits``, ``input_spaces``, modules and encoders are used),
    ``x`` the modality-name dict ``{m: [B, N, ...]}`` and ``labels`` [B].
    Subclasses never modify ``x`` in place.
    """

    def check_modalities(self, modalities: Sequence[str]) -> None:
        """Raise ValueError if the perturbation names an unknown modality.

        Args:
            modalities (Sequence[str]): the model's modality names.
        """

    def __call__(self, model: nn.Module, x: Dict[str, Tensor],
                 labels: Tensor) -> PerturbedBatch:
        raise NotImplementedError


def _error(kind: str, message: str) -> ValueError:
    return ValueError(f"train_perturbation (type='{kind}'): {message}")


def _check_number(kind: str, key: str, value, positive: bool) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(value) and (value > 0 if positive else
                                        value >= 0))
    if not ok:
        bound = '> 0' if positive else '>= 0'
        raise _error(kind, f'{key} must be a finite number {bound}, got '
                     f'{value!r}')
    return float(value)


@contextlib.contextmanager
def batchnorm_policy(model: nn.Module, policy: str) -> Iterator[None]:
    """BatchNorm behaviour of ``model`` while a training attack runs.

    Args:
        model (nn.Module): the recognizer (needs ``encoders``).
        policy (str): ``'frozen_stats'``: batch statistics as in training,
            but the running statistics are restored afterwards, so the
            attack's extra forward passes do not move them; ``'train'``:
            nothing changes (the reference's behaviour: the attack updates
            the running statistics); ``'eval'``: encoders in eval mode
            (running statistics used), their mode restored afterwards.
    """
    if policy == 'train':
        yield
        return
    if policy == 'eval':
        modes = [(module, module.training)
                 for module in model.encoders.modules()]
        model.encoders.eval()
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode
        return
    saved = [(bn, {k: v.clone() for k, v in bn._buffers.items()
                   if v is not None})
             for bn in model.modules() if isinstance(bn, _BatchNorm)]
    try:
        yield
    finally:
        for bn, buffers in saved:
            for key, value in buffers.items():
                bn._buffers[key].copy_(value)


@TRAIN_PERTURBATIONS.register_module(name='MultiModalPGD')
@reject_unknown_keys
class TrainPGD(TrainPerturbation):
    """Adversarial training inputs: joint L2 PGD on the fused cross-entropy.

    Runs :class:`crmt_mm.attacks.MultiModalPGD` (one L2 ball of radius
    ``eps`` over all modalities jointly, in the normalised input space, no
    random start) on the fused logits and returns the detached adversarial
    inputs; the loss is then evaluated on them only (CRMT-AT; MMAT with
    ``rho=0``). The default step is ``eps / steps``, as in the CRMT
    reference implementation.

    Args:
        eps (float): joint L2 budget in the normalised input space, >= 0.
        steps (int): PGD steps, >= 1. Defaults to 5.
        step_size (float, optional): step in the units of ``eps``; None
            means ``eps / steps``. Defaults to None.
        bn (str): BatchNorm during the attack, one of
            ``('frozen_stats', 'train', 'eval')``, see
            :func:`batchnorm_policy`. Defaults to ``'frozen_stats'``.
        clamp (bool): clamp adversarial inputs to the modality's valid raw
            range (``CRMTRecognizer.input_spaces``). Defaults to False (as
            the reference).

    Example:
        >>> model = dict(
        ...     type='CRMTRecognizer', ...,
        ...     train_perturbation=dict(type='MultiModalPGD', eps=0.1,
        ...                             steps=5, bn='frozen_stats',
        ...                             clamp=False))
    """

    def __init__(self, eps: float, steps: int = 5,
                 step_size: Optional[float] = None,
                 bn: str = 'frozen_stats', clamp: bool = False) -> None:
        kind = 'MultiModalPGD'
        eps = _check_number(kind, 'eps', eps, positive=False)
        if isinstance(steps, bool) or not isinstance(
                steps, numbers.Integral) or steps < 1:
            raise _error(kind, f'steps must be an integer >= 1, got '
                         f'{steps!r}')
        step_size = eps / steps if step_size is None else _check_number(
            kind, 'step_size', step_size, positive=False)
        if bn not in BN_POLICIES:
            raise _error(kind, f'bn must be one of {BN_POLICIES}, got '
                         f'{bn!r}')
        if not isinstance(clamp, bool):
            raise _error(kind, f'clamp must be True or False, got {clamp!r}')
        self.bn = bn
        self.attack = MultiModalPGD(eps=eps, steps=int(steps),
                                    step_size=step_size, clamp=clamp)

    def __call__(self, model, x, labels):
        with batchnorm_policy(model, self.bn):
            adv = self.attack.perturb(model.fused_logits, x, labels,
                                      model.input_spaces())
        return PerturbedBatch({m: v.detach() for m, v in adv.items()})


@TRAIN_PERTURBATIONS.register_module(name='Mixup')
@reject_unknown_keys
class TrainMixup(TrainPerturbation):
    """Mixup (Zhang et al., ICLR 2018) of every modality with one partner.

    Per batch: ``lam ~ Beta(alpha, alpha)`` and one permutation ``perm``,
    shared by all modalities, ``x^(m) <- lam x^(m) + (1 - lam) x^(m)[perm]``;
    the loss receives ``labels[perm]`` and ``lam`` (the CRMT margin then
    uses the mixed target logit, see ``docs/method.md``). Draws from the
    global torch RNG, which mmengine seeds (``randomness=dict(seed=...)``).

    Args:
        alpha (float): Beta parameter, > 0. Defaults to 1.0.

    Example:
        >>> train_perturbation = dict(type='Mixup', alpha=1.0)
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _check_number('Mixup', 'alpha', alpha, positive=True)

    def __call__(self, model, x, labels):
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        perm = torch.randperm(labels.numel(), device=labels.device)
        mixed = {m: lam * v + (1 - lam) * v[perm] for m, v in x.items()}
        return PerturbedBatch(mixed, labels[perm], lam)


@TRAIN_PERTURBATIONS.register_module(name='GaussianNoise')
@reject_unknown_keys
class TrainGaussianNoise(TrainPerturbation):
    """Gaussian data augmentation: ``x^(m) + sigma_m * N(0, I)``.

    Fresh noise every training step, drawn from the global torch RNG (seeded
    by mmengine's ``randomness=dict(seed=...)``, so runs repeat exactly), in
    the normalised input space (the model's input units, the units of the
    evaluation's ``GaussianNoise`` and of smoothing's sigma). Not clamped:
    randomized smoothing certifies the unclamped Gaussian.

    Args:
        modality (str, optional): the noised modality; None noises every
            modality. Defaults to None.
        sigma (float | dict): noise std, >= 0. With ``modality=None`` either
            one value for all modalities or ``{modality: sigma_m}`` naming
            every modality of the model; with a ``modality``, one value.

    Example:
        >>> train_perturbation = dict(type='GaussianNoise', modality='audio',
        ...                           sigma=0.25)
        >>> train_perturbation = dict(type='GaussianNoise', modality=None,
        ...                           sigma=dict(visual=0.1, audio=0.25))
    """

    def __init__(self, sigma, modality: Optional[str] = None) -> None:
        kind = 'GaussianNoise'
        if modality is not None and (not isinstance(modality, str)
                                     or not modality):
            raise _error(kind, f'modality must be a modality name or None, '
                         f'got {modality!r}')
        if isinstance(sigma, Mapping):
            if modality is not None:
                raise _error(kind, f'a per-modality sigma dict needs '
                             f'modality=None, got modality={modality!r}; '
                             'give one number for one modality')
            if not sigma:
                raise _error(kind, 'sigma dict is empty')
            sigma = {str(m): _check_number(kind, f'sigma.{m}', s, False)
                     for m, s in sigma.items()}
        else:
            sigma = _check_number(kind, 'sigma', sigma, positive=False)
        self.modality = modality
        self.sigma = sigma

    def check_modalities(self, modalities):
        modalities = tuple(modalities)
        if isinstance(self.sigma, dict):
            if set(self.sigma) != set(modalities):
                raise _error(
                    'GaussianNoise',
                    f'sigma names the modalities {sorted(self.sigma)} but '
                    f'the model has {list(modalities)}; give a sigma for '
                    'each (0 leaves one clean)')
        elif self.modality is not None and self.modality not in modalities:
            raise _error('GaussianNoise',
                         f'modality {self.modality!r} is not one of the '
                         f"model's modalities {list(modalities)}")

    def sigmas(self, modalities: Sequence[str]) -> Dict[str, float]:
        """``{modality: sigma}`` of the noised modalities, in model order."""
        if isinstance(self.sigma, dict):
            return {m: self.sigma[m] for m in modalities}
        if self.modality is not None:
            return {self.modality: self.sigma}
        return {m: self.sigma for m in modalities}

    def __call__(self, model, x, labels):
        noisy = dict(x)
        for m, sigma in self.sigmas(tuple(x)).items():
            if sigma > 0:
                noisy[m] = x[m] + sigma * torch.randn_like(x[m])
        return PerturbedBatch(noisy)


def build_train_perturbation(cfg: Optional[Mapping],
                             modalities: Sequence[str]
                             ) -> Optional[TrainPerturbation]:
    """Build and check a recognizer's ``train_perturbation`` entry.

    Args:
        cfg (dict, optional): ``dict(type=..., **options)``; None = clean
            training inputs.
        modalities (Sequence[str]): the model's modality names.

    Returns:
        TrainPerturbation | None

    Raises:
        ValueError: no or unknown ``type`` (naming the registered ones),
            invalid values or modalities.
        TypeError: an option the type does not take (naming those it does).
    """
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        raise ValueError(f'train_perturbation must be a dict with a type, '
                         f'one of {sorted(TRAIN_PERTURBATIONS.module_dict)}; '
                         f'got {cfg!r}')
    options = dict(cfg)
    kind = options.pop('type')
    cls = TRAIN_PERTURBATIONS.module_dict.get(kind)
    if cls is None:
        raise ValueError(f'train_perturbation type {kind!r} is unknown; '
                         'registered types: '
                         f'{sorted(TRAIN_PERTURBATIONS.module_dict)}')
    try:
        perturbation = cls(**options)
    except TypeError as err:  # an unknown option: say which entry it is in
        raise TypeError(f'train_perturbation (type={kind!r}): {err}') \
            from err
    perturbation.check_modalities(modalities)
    return perturbation


def moved_loss_keys_message(cfg: Mapping) -> Optional[str]:
    """The new spelling of a loss config that uses the old variant keys.

    ``loss=dict(variant='AT', at_eps=...)`` and ``variant='Mix', mix_alpha``
    described the training inputs; they are now the recognizer's
    ``train_perturbation``. Returns None if ``cfg`` has none of
    :data:`MOVED_LOSS_KEYS`.

    Args:
        cfg (Mapping): the loss options (without ``type``).
    """
    old = [k for k in MOVED_LOSS_KEYS if k in cfg]
    if not old:
        return None
    variant = cfg.get('variant', 'JT')
    if variant == 'AT':
        entry = dict(type='MultiModalPGD', eps=cfg.get('at_eps', 0.1),
                     steps=cfg.get('at_steps', 5),
                     bn=cfg.get('at_bn', 'frozen_stats'),
                     clamp=cfg.get('at_clamp', False))
    elif variant == 'Mix':
        entry = dict(type='Mixup', alpha=cfg.get('mix_alpha', 1.0))
    else:
        entry = None
    loss = {k: v for k, v in cfg.items() if k not in MOVED_LOSS_KEYS}
    loss_text = ', '.join(["type='CRMTMarginLoss'"] +
                          [f'{k}={v!r}' for k, v in loss.items()])
    if entry is None:
        new = (f"model=dict(loss=dict({loss_text})) with no "
               'train_perturbation (clean inputs; the old JT variant '
               'ignored at_*/mix_alpha keys)')
    else:
        entry_text = ', '.join(f'{k}={v!r}' for k, v in entry.items())
        new = (f'model=dict(loss=dict({loss_text}), '
               f'train_perturbation=dict({entry_text}))')
    return (f'the loss keys {old} moved: the loss now computes CE + rho * '
            'margin from the logits only, and how training inputs are '
            "perturbed is the recognizer's train_perturbation entry. Write "
            f'{new}.')


__all__ = [
    'TRAIN_PERTURBATIONS', 'BN_POLICIES', 'MOVED_LOSS_KEYS', 'PerturbedBatch',
    'TrainPerturbation', 'TrainPGD', 'TrainMixup', 'TrainGaussianNoise',
    'batchnorm_policy', 'build_train_perturbation',
    'moved_loss_keys_message'
]
