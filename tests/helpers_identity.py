"""Helpers for the model-identity and initialisation tests."""
import importlib.util
import os.path as osp

import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: Spatial side of the shrunk test inputs of ResNet encoders.
SIDE = 32


def load_tool(name: str):
    """``tools/<name>.py`` as a module (``tools`` is not a package, and
    ``test`` would collide with the standard library's)."""
    spec = importlib.util.spec_from_file_location(
        f'crmt_tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shrink_inputs(model_cfg) -> None:
    """Small input shapes for ResNet encoders (ConvEncoder's are fixed by
    its linear layer), so every config's model runs quickly on a CPU."""
    for encoder in model_cfg.encoders.values():
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
