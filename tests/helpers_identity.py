"""Helpers for the model-identity and initialisation tests."""
import os.path as osp

import torch

from crmt_mm.models.recognizers import resolve_recognizer
from helpers import load_tool  # noqa: F401  (re-exported for the tests)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: Spatial side of the shrunk test inputs of ResNet encoders.
SIDE = 32


def shrink_inputs(model_cfg) -> None:
    """Small input shapes for ResNet encoders (ConvEncoder's are fixed by
    its linear layer), so every config's model runs quickly on a CPU."""
    for encoder in model_cfg.encoders.values():
        if 'recognizer' in encoder:  # a stock branch: one NCHW/audio clip
            backbone = resolve_recognizer(encoder.recognizer)['backbone']
            encoder.input_shape = (backbone.get('in_channels', 3), SIDE,
                                   SIDE)
            continue
        backbone = encoder.backbone
        if backbone.get('type') == 'ConvEncoder':
            continue
        channels = backbone.get('in_channels', 3)
        if encoder.get('temporal', 'none') == 'fold':
            encoder.input_shape = (channels, 2, SIDE, SIDE)
        else:
            encoder.input_shape = (channels, SIDE, SIDE)


def fixed_inputs(model, batch: int = 2, seed: int = 0) -> dict:
    """``{modality: [B, 1, *input_shape]}``, the same for every order."""
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn((batch, 1) + model.encoders[m].input_shape,
                           generator=g) for m in sorted(model.encoders)}
