"""Perturbations for robust evaluation (``docs/evaluation.md``), in plain torch.

Every perturbation follows one contract (:class:`Perturbation`):
``perturb(forward, x, y, spaces)`` returns perturbed modality dicts and
``predict(...)`` the fused logits ``[B, K]`` under the perturbation, where
``forward(x, drop=())`` is the model's fused-logit function. Budgets are
per-sample L2 norms in the normalised input space unless ``eps_unit='raw'``.

Imports inside this package are relative only, so it can be loaded without
the rest of ``crmt_mm`` (and without mmengine/mmaction).
"""
from .base import (BUDGET_SPACE, DESCRIPTION_KEYS, InputSpace, Perturbation,
                   UnknownModalityError, description)
from .builder import PERTURBATION_TYPES, build_perturbations, check_modalities
from .fgm import MultiModalFGM, PerModalityFGM, UniModalFGM
from .l2_attack import GRAD_NORM_GUARD, L2Ball, L2GradientAttack
from .missing import MissingModality
from .noise import GaussianNoise
from .pgd import MultiModalPGD, PerModalityPGD, UniModalPGD
from .worst_case import WorstCase

__all__ = [
    'InputSpace', 'Perturbation', 'UnknownModalityError', 'description',
    'DESCRIPTION_KEYS', 'BUDGET_SPACE', 'L2Ball',
    'L2GradientAttack', 'GRAD_NORM_GUARD', 'MultiModalFGM', 'UniModalFGM',
    'PerModalityFGM', 'MultiModalPGD', 'UniModalPGD', 'PerModalityPGD',
    'MissingModality', 'GaussianNoise', 'WorstCase', 'PERTURBATION_TYPES',
    'build_perturbations', 'check_modalities'
]
