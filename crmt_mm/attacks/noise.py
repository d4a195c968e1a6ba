"""Gaussian-noise evaluation (a crmt_mm extension, ``docs/evaluation.md``)."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .base import (BUDGET_SPACE, ForwardFn, Perturbation, Spaces,
                   check_labels, check_modality_name, check_nonneg,
                   description, format_value, require_modalities, space_of)


class GaussianNoise(Perturbation):
    """Additive isotropic Gaussian noise: x^(m) + σ·N(0, I).

    σ is in the normalised space (the model's input units), per element.
    With ``modality=None`` every modality of the input receives independent
    noise. Modalities whose ``InputSpace`` has bounds are clamped to the
    valid range afterwards (visual); unbounded ones (audio) are not.

    Note:
        Every call draws from a fresh ``torch.Generator`` seeded with
        ``seed``, so ``perturb`` is a pure function of its inputs (the same
        batch gets the same noise in every evaluation and on every run) and
        never touches the global RNG. The flip side: batches of the same
        shape receive the same noise tensor, so the i-th samples of all
        batches share a noise draw. That keeps the estimate unbiased but
        correlates the per-batch errors; average over several seeds if the
        variance matters.

    Args:
        modality (str, optional): the noised modality; None = all.
            Defaults to None.
        sigma (float): noise std, >= 0 (0 = no-op). Keyword-only.
        seed (int): generator seed. Defaults to 0.
        clamp (bool): clamp to the ``InputSpace`` bounds. Defaults to True.
        name (str, optional): overrides ``'noise_<m>@<sigma>'`` (``'all'``
            for every modality). Defaults to None.

    Example:
        >>> GaussianNoise('audio', sigma=0.1).name
        'noise_audio@0.1'
    """

    def __init__(self, modality: Optional[str] = None, *, sigma: float,
                 seed: int = 0, clamp: bool = True,
                 name: Optional[str] = None):
        super().__init__(name)
        self.modality = None if modality is None \
            else check_modality_name(modality)
        self.sigma = check_nonneg(sigma, 'sigma')
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f'seed must be an int, got {seed!r}')
        self.seed, self.clamp = seed, bool(clamp)

    @property
    def modalities(self) -> Optional[Tuple[str, ...]]:
        return None if self.modality is None else (self.modality,)

    def default_name(self) -> str:
        target = self.modality if self.modality is not None else 'all'
        return f'noise_{target}@{format_value(self.sigma)}'

    def describe(self) -> dict:
        """See :meth:`Perturbation.describe`: a point of ``noise_<m>`` at
        ``budget = sigma``."""
        target = self.modality if self.modality is not None else 'all'
        return description(
            self, kind='noise', label=target, curve=f'noise_{target}',
            budget=self.sigma, unit='normalized', settings=dict(
                sigma=self.sigma, seed=self.seed, clamp=self.clamp,
                space=BUDGET_SPACE['normalized']))

    def perturb(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Dict[str, Tensor]:
        check_labels(x, y)
        targets = self.modalities if self.modality is not None else tuple(x)
        require_modalities(x, targets, self.name)
        out = dict(x)
        if self.sigma == 0:
            return out
        generator = torch.Generator(device=x[targets[0]].device)
        generator.manual_seed(self.seed)
        for m in targets:  # x's order = the model's modality order
            clean = x[m].detach()
            noisy = clean + self.sigma * torch.randn(
                clean.shape, generator=generator, device=clean.device,
                dtype=clean.dtype)
            space = space_of(spaces, m) if self.clamp else None
            out[m] = space.clamp(noisy) if space is not None else noisy
        return out
