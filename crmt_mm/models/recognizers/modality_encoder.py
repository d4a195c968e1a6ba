"""Wraps any mmaction2 backbone into a per-modality feature extractor."""
from typing import Optional, Sequence, Union

from mmaction.registry import MODELS
from torch import Tensor, nn

from crmt_mm.utils import reject_unknown_keys
from .stock_branch import stock_branch_args


@reject_unknown_keys
class ModalityEncoder(nn.Module):
    """One modality's encoder: backbone plus pooling to one vector.

    Args:
        input_key (str): key of this modality in the packed inputs
            (``PackActionInputs(collect_keys=...)``), e.g. ``'imgs'``.
        backbone (dict, optional): any mmaction2/mmengine backbone config;
            required unless ``recognizer`` is given.
        feat_dim (int, optional): size D of the pooled feature (the
            backbone's output channels, e.g. 512 for ResNet-18); required
            unless ``recognizer`` is given.
        temporal (str): how a ``[C, T, H, W]`` clip meets a backbone:
            ``'fold'`` runs a 2-D backbone on every frame and averages the
            features over T (CRMT's visual encoder); ``'channels'`` stacks
            the frames as channels (C*T); ``'none'`` passes the input as is
            (audio ``[1, F, M]`` or a 3-D backbone); ``'clips'`` gives the
            backbone the whole ``[B, N, ...]`` input and expects ``[B, D]``
            back (a :class:`StockBranch`). Defaults to ``'none'``.
        input_shape (Sequence[int], optional): expected per-clip shape (the
            dims after batch and clip), checked on every call.
        recognizer (str | dict, optional): a stock mmaction2 recognizer
            config (or ``'mmaction::<config>.py'``) whose backbone and neck
            become this encoder (see :class:`StockBranch`); sets
            ``backbone``, ``feat_dim`` (its ``cls_head.in_channels``) and
            ``temporal='clips'``. Defaults to None.

    Shapes: ``[B, N, *input_shape]`` -> ``[B, feat_dim]`` (mean over the N
    clips and, for ``'fold'``, the T frames; backbone outputs with spatial
    dims are globally average-pooled).
    """
    TEMPORAL = ('fold', 'channels', 'none', 'clips')

    def __init__(self, input_key: str, backbone: Optional[dict] = None,
                 feat_dim: Optional[int] = None, temporal: str = 'none',
                 input_shape: Optional[Sequence[int]] = None,
                 recognizer: Optional[Union[str, dict]] = None) -> None:
        super().__init__()
        if recognizer is not None:
            backbone, feat_dim, temporal = stock_branch_args(
                recognizer, backbone, feat_dim, temporal)
        elif backbone is None or feat_dim is None:
            raise ValueError('an encoder needs backbone and feat_dim, or a '
                             'stock recognizer=...')
        if temporal not in self.TEMPORAL:
            raise ValueError(f'temporal must be one of {self.TEMPORAL}, got '
                             f'{temporal!r}')
        if int(feat_dim) <= 0:
            raise ValueError(f'feat_dim must be positive, got {feat_dim}')
        self.input_key = input_key
        self.backbone = MODELS.build(backbone)
        self.feat_dim = int(feat_dim)
        self.temporal = temporal
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def forward(self, x: Tensor) -> Tensor:
        if self.temporal == 'clips':
            return self.backbone(x)
        batch, clips = x.shape[:2]
        x = x.flatten(0, 1)
        if self.temporal == 'fold':
            frames = x.shape[2]
            x = x.transpose(1, 2).flatten(0, 1)
            clips *= frames
        elif self.temporal == 'channels':
            x = x.flatten(1, 2)
        out = self.backbone(x)
        if isinstance(out, (tuple, list)):
            out = out[-1]
        if out.ndim > 2:
            out = out.flatten(2).mean(2)
        return out.view(batch, clips, -1).mean(1)
