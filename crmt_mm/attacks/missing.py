"""Missing-modality evaluation (``docs/evaluation.md``, "Honest labelling")."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from .base import (ForwardFn, Perturbation, Spaces, check_labels,
                   check_modality_name, description, require_modalities)

MODES = ('input', 'feature')


class MissingModality(Perturbation):
    """Remove one modality, at the input or at the feature level.

    The paper's fill value is unknown, so both variants exist and are named
    apart; they differ under BatchNorm:

    * ``mode='input'`` (name ``missing_<m>``): x^(m) <- 0 in the normalised
      space, i.e. the dataset-mean input, then the full forward. φ^(m)(0) is
      not 0 (BatchNorm shifts, biases), so z^(m) still contributes.
    * ``mode='feature'`` (name ``missing_<m>_feat``): ``forward(x,
      drop=(m,))`` zeroes φ^(m), removing exactly a^(m) ⊙ z^(m) from the fused
      logits; the bias b stays.

    Note:
        Feature zeroing acts inside the model and has no input-space
        equivalent: ``acts_on_inputs`` is False and :meth:`perturb` raises
        ``NotImplementedError`` rather than return the clean inputs, which
        would silently report clean accuracy. Use :meth:`predict`.

    Args:
        modality (str): the removed modality, e.g. ``'audio'``.
        mode (str): ``'input'`` or ``'feature'``. Defaults to ``'input'``.
        name (str, optional): overrides the default name. Defaults to None.

    Example:
        >>> MissingModality('audio', mode='feature').name
        'missing_audio_feat'
    """

    def __init__(self, modality: str, mode: str = 'input',
                 name: Optional[str] = None):
        super().__init__(name)
        self.modality = check_modality_name(modality)
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        self.mode = mode
        self.acts_on_inputs = mode == 'input'

    @property
    def modalities(self) -> Tuple[str, ...]:
        return (self.modality,)

    def default_name(self) -> str:
        suffix = '_feat' if self.mode == 'feature' else ''
        return f'missing_{self.modality}{suffix}'

    def describe(self) -> dict:
        """See :meth:`Perturbation.describe` (kind ``'missing'``)."""
        return description(self, kind='missing', settings=dict(
            mode=self.mode, fill='0 in the normalised space (dataset mean)'
            if self.mode == 'input' else 'features zeroed (a^(m) z^(m) '
            'removed, bias kept)'))

    def perturb(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Dict[str, Tensor]:
        check_labels(x, y)
        require_modalities(x, self.modalities, self.name)
        if self.mode == 'feature':
            raise NotImplementedError(
                f'{self.name}: feature zeroing happens inside the model and '
                'has no perturbed input; call predict()')
        out = dict(x)
        out[self.modality] = torch.zeros_like(x[self.modality])
        return out

    def predict(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Tensor:
        if self.mode == 'input':
            return forward(self.perturb(forward, x, y, spaces))
        check_labels(x, y)
        require_modalities(x, self.modalities, self.name)
        return forward(dict(x), drop=(self.modality,))
