"""A small convolutional backbone for low-resolution inputs (AV-Digits)."""
from typing import Sequence, Tuple

from mmaction.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn


@MODELS.register_module()
class ConvEncoder(BaseModule):
    """Conv(3x3)-BN-ReLU-MaxPool blocks, then flatten and a linear layer.

    Ending in flatten + linear keeps the spatial layout (where in the
    spectrogram a word lies), which a global average pool discards
    (``docs/datasets.md``, AV-Digits).

    Args:
        in_channels (int): input channels C.
        input_size (tuple[int, int]): (H, W) of the input.
        channels (Sequence[int]): output channels of each block, each block
            halves H and W. Defaults to (16, 32).
        feat_dim (int): output feature size D. Defaults to 64.
        init_cfg (dict, optional): Defaults to None.

    Shapes: [N, C, H, W] -> [N, feat_dim].

    Example:
        >>> backbone = dict(type='ConvEncoder', in_channels=1,
        ...                 input_size=(64, 64), feat_dim=64)
    """

    def __init__(self, in_channels: int, input_size: Tuple[int, int],
                 channels: Sequence[int] = (16, 32), feat_dim: int = 64,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        height, width = input_size
        if height % 2**len(channels) or width % 2**len(channels):
            raise ValueError(
                f'input_size {tuple(input_size)} must be divisible by '
                f'2**{len(channels)} (one halving per block in {channels})')
        layers, previous = [], in_channels
        for width_out in channels:
            layers += [nn.Conv2d(previous, width_out, 3, padding=1,
                                 bias=False),
                       nn.BatchNorm2d(width_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            previous = width_out
        self.features = nn.Sequential(*layers)
        cells = (height >> len(channels)) * (width >> len(channels))
        self.fc = nn.Linear(previous * cells, feat_dim)
        self.feat_dim = feat_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x).flatten(1))
