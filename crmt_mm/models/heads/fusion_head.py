"""Late-fusion heads sharing one interface (docs/method.md §2).

Both heads split one ``Linear(sum_m D_m, K)`` into column blocks, one per
modality, so that ``z^(m) = W^(m) phi^(m)`` are the uni-modal logits and the
fused logits are ``h = sum_m a^(m) * z^(m) + b``. They differ only in how
``W^(m)`` is normalised and whether ``a`` is learnt, so JT and CRMT differ
only in the head (and the loss).
"""
from typing import Dict, Iterable, Mapping

import torch
from mmaction.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from crmt_mm.utils import reject_unknown_keys
from .orthonormal import center_unit_rows, orthonormal_rows


class FusionHead(BaseModule):
    """Base class: block-wise linear classifier over modality features.

    Args:
        num_classes (int): K.
        in_channels (dict[str, int]): feature size D_m of every modality, in
            the model's modality order.
        init_cfg (dict, optional): mmengine init config. Defaults to None.
    """

    def __init__(self, num_classes: int, in_channels: Mapping[str, int],
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_classes < 2:
            raise ValueError(f'num_classes must be >= 2, got {num_classes}')
        if len(in_channels) < 2:
            raise ValueError('a fusion head needs at least 2 modalities, got '
                             f'{list(in_channels)}')
        self.num_classes = num_classes
        self.modalities = tuple(in_channels)
        self.in_channels = dict(in_channels)
        self.fc = nn.Linear(sum(self.in_channels.values()), num_classes)

    @property
    def bias(self) -> Tensor:
        """Shared bias b [K]."""
        return self.fc.bias

    def class_weights(self) -> Dict[str, Tensor]:
        """Per-modality classifier ``W^(m)`` [K, D_m] as used in ``z``."""
        blocks = self.fc.weight.split(list(self.in_channels.values()), dim=1)
        return dict(zip(self.modalities, blocks))

    def integration_weights(self) -> Tensor:
        """Integration weights a [M, K]."""
        raise NotImplementedError

    def unimodal_logits(self, feats: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """``{m: [B, D_m]}`` -> uni-modal logits ``{m: [B, K]}`` (no bias)."""
        weights = self.class_weights()
        return {m: feats[m] @ weights[m].T for m in self.modalities}

    def fuse(self, logits: Mapping[str, Tensor],
             drop: Iterable[str] = ()) -> Tensor:
        """Fused logits [B, K]; modalities in ``drop`` contribute nothing
        (feature zeroing: ``phi^(m) = 0`` removes exactly ``a^(m) z^(m)``)."""
        drop = set(drop)
        unknown = drop - set(self.modalities)
        if unknown:
            raise KeyError(f'cannot drop unknown modalities {sorted(unknown)}'
                           f'; the model has {list(self.modalities)}')
        a = self.integration_weights()
        fused = self.bias
        for index, m in enumerate(self.modalities):
            if m not in drop:
                fused = fused + a[index] * logits[m]
        return fused


@MODELS.register_module()
@reject_unknown_keys
class ConcatHead(FusionHead):
    """Joint-training baseline: one linear layer on concatenated features.

    ``h = sum_m W^(m) phi^(m) + b`` with unconstrained ``W``; ``a`` is fixed
    to ones so the certification formulas apply unchanged.

    Example:
        >>> head = dict(type='ConcatHead', num_classes=31)
    """

    def __init__(self, num_classes: int, in_channels: Mapping[str, int],
                 init_cfg=None) -> None:
        super().__init__(num_classes, in_channels, init_cfg)
        self.register_buffer(
            'ones', torch.ones(len(self.modalities), num_classes),
            persistent=False)

    def integration_weights(self) -> Tensor:
        return self.ones


@MODELS.register_module()
@reject_unknown_keys
class CRMTHead(FusionHead):
    """CRMT fusion head: normalised class rows and integration weights.

    ``z^(m) = W~^(m) phi^(m)`` with normalised rows, ``h_k = sum_m a_k^(m)
    z_k^(m) + b_k``. Unit-norm rows make ``|W~_k (phi - phi')| <= ||phi -
    phi'||``: the classifier adds no factor to the Lipschitz constants.

    Args:
        num_classes (int): K.
        in_channels (dict[str, int]): D_m per modality (filled in by
            ``CRMTRecognizer`` from its encoders).
        row_norm (str): ``'orthonormal'`` (W~ W~^T = I per modality, the
            paper's design; needs K <= D_m - 1) or ``'center_unit'`` (rows
            centred and unit-norm, the reference implementation).
            Defaults to ``'orthonormal'``.
        init_integration (float): initial value of every a_k^(m).
            Defaults to 0.1.
        kappa (float): relative ridge of the whitening, keeps it finite for
            rank-deficient weights. Defaults to 1e-6.
        init_cfg (dict, optional): Defaults to None.

    Example:
        >>> head = dict(type='CRMTHead', num_classes=31,
        ...             row_norm='orthonormal', init_integration=0.1)
    """
    ROW_NORMS = ('orthonormal', 'center_unit')

    def __init__(self, num_classes: int, in_channels: Mapping[str, int],
                 row_norm: str = 'orthonormal', init_integration: float = 0.1,
                 kappa: float = 1e-6, init_cfg=None) -> None:
        super().__init__(num_classes, in_channels, init_cfg)
        if row_norm not in self.ROW_NORMS:
            raise ValueError(f'row_norm must be one of {self.ROW_NORMS}, got '
                             f'{row_norm!r}')
        if row_norm == 'orthonormal':
            small = {m: d for m, d in self.in_channels.items()
                     if num_classes > d - 1}
            if small:
                raise ValueError(
                    f'row_norm=orthonormal needs num_classes ({num_classes}) '
                    f'<= feature_dim - 1 for every modality; too small: '
                    f"{small}. Use wider encoders or row_norm='center_unit'.")
        if kappa < 0:
            raise ValueError(f'kappa must be >= 0, got {kappa}')
        self.row_norm = row_norm
        self.kappa = kappa
        self.integration = nn.Parameter(
            torch.full((len(self.modalities), num_classes),
                       float(init_integration)))

    def integration_weights(self) -> Tensor:
        return self.integration

    def class_weights(self) -> Dict[str, Tensor]:
        raw = super().class_weights()
        if self.row_norm == 'orthonormal':
            return {m: orthonormal_rows(w, self.kappa) for m, w in raw.items()}
        return {m: center_unit_rows(w) for m, w in raw.items()}
