"""A stock mmaction2 recognizer config turned into one CRMT branch.

An encoder entry ``recognizer=<mmaction2 recognizer config>`` (a dict such
as ``{{_base_.model}}`` or a config file reference such as
``'mmaction::recognition/tsn/<name>.py'``) keeps the stock recognizer's
backbone and neck as the branch and drops its classification head; the CRMT
head replaces it. :func:`resolve_recognizer` reads the reference,
:func:`with_stock_preprocessors` copies the stock data preprocessor into
the modality's entry of ``MultiModalDataPreprocessor`` and
:class:`StockBranch` computes the branch features.
"""
import copy
from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from mmaction.registry import MODELS
from mmengine.config import Config, ConfigDict
from mmengine.model import BaseModule
from torch import Tensor

from crmt_mm.utils import reject_unknown_keys

#: Recognizer classes (and their subclasses) a branch can come from, with
#: the input layout of each: 2-D segments [B, S, C, H, W], 3-D clips
#: [B, N, C, T, H, W], audio [B, N, 1, T, F].
STOCK_RECOGNIZERS = ('Recognizer2D', 'Recognizer3D', 'RecognizerAudio')
#: Heads that only average-pool (and, for TSN/TSM, average over segments)
#: before their classifier, so the pooled backbone/neck output is the
#: feature the head classifies.
POOLING_HEADS = ('TSNHead', 'TSMHead', 'TPNHead', 'I3DHead', 'SlowFastHead',
                 'X3DHead', 'TSNAudioHead', 'TimeSformerHead',
                 'UniFormerHead')
#: Input layout of each kind of branch: the ``FormatShape`` input_format
#: that gives it, the batch it makes, and its number of dims.
LAYOUTS = {
    'Recognizer2D': ('NCHW', '[B, segments, C, H, W]: frames as 2-D '
                     'segments', 5),
    'Recognizer3D': ('NCTHW', '[B, clips, C, T, H, W]: 3-D clips', 6),
    'RecognizerAudio': (None, '[B, clips, 1, T, F]: audio features', 5),
}
#: The other kind to suggest for data in a layout a branch cannot take.
OTHER_KIND = {'Recognizer2D': 'a 3-D recognizer (Recognizer3D: SlowOnly, '
                              'I3D, X3D, ...) for NCTHW clips',
              'Recognizer3D': 'a 2-D recognizer (Recognizer2D: TSN, TSM, '
                              '...) for NCHW segments'}
#: Keys of a stock ActionDataPreprocessor copied into the modality entry.
PREPROCESSOR_KEYS = ('mean', 'std', 'format_shape', 'to_rgb', 'to_float32')


def resolve_recognizer(recognizer: Union[str, Mapping]) -> dict:
    """A recognizer reference -> its model config dict (a copy).

    Args:
        recognizer (str | dict): a model config dict, or a config file whose
            ``model`` is used: a path, or ``'<scope>::<path>'`` for a config
            shipped with an OpenMMLab package (``'mmaction::...'``), the
            notation of ``_base_``.

    Returns:
        dict: the recognizer's model config.
    """
    if isinstance(recognizer, Mapping):
        return copy.deepcopy(dict(recognizer))
    if not isinstance(recognizer, str):
        raise TypeError('recognizer must be a model config dict or a config '
                        f'file name, got {type(recognizer).__name__}')
    # The resolution `_base_` uses, so 'mmaction::...' means the same here
    # as in a config's _base_ list.
    path, _ = Config._get_cfg_path(recognizer, '')
    try:
        model = Config.fromfile(path).get('model')
    except FileNotFoundError as err:
        raise FileNotFoundError(f'recognizer={recognizer!r}: no config file '
                                f'at {path}') from err
    if model is None:
        raise ValueError(f'recognizer={recognizer!r}: {path} defines no '
                         '`model`')
    return model.to_dict() if isinstance(model, ConfigDict) else dict(model)


def _recognizer_kind(cfg: Mapping) -> str:
    """The supported base class of ``cfg['type']``, or a ValueError."""
    name = cfg.get('type')
    cls = MODELS.get(name) if isinstance(name, str) else name
    for base in STOCK_RECOGNIZERS:
        if isinstance(cls, type) and issubclass(cls, MODELS.get(base)):
            return base
    raise ValueError(
        f'recognizer type {name!r} cannot be a CRMT branch; supported are '
        f'{list(STOCK_RECOGNIZERS)} and their subclasses (single-input '
        'recognizers with a backbone, an optional neck and a cls_head). '
        'For other models give the encoder a backbone instead.')


def check_recognizer(cfg: Mapping) -> Tuple[str, int]:
    """Validate a stock recognizer config for use as a branch.

    Returns:
        tuple[str, int]: its kind (one of :data:`STOCK_RECOGNIZERS`) and the
        feature size D (``cls_head.in_channels``).
    """
    kind = _recognizer_kind(cfg)
    head = cfg.get('cls_head')
    if not isinstance(head, Mapping) or 'in_channels' not in head:
        raise ValueError(
            f'recognizer {cfg["type"]}: a branch takes its feature size from '
            'cls_head.in_channels, but the config has no cls_head with '
            'in_channels.')
    if head.get('type') not in POOLING_HEADS:
        raise ValueError(
            f'recognizer {cfg["type"]}: cls_head type {head.get("type")!r} '
            'does more than pooling before its classifier, so its features '
            'are not the pooled backbone output a branch gives; supported '
            f'heads: {list(POOLING_HEADS)}.')
    neck = cfg.get('neck')
    if isinstance(neck, Mapping) and neck.get('aux_head') is not None:
        raise ValueError(
            f'recognizer {cfg["type"]}: neck.aux_head adds an auxiliary '
            'loss a CRMT branch does not train; set neck.aux_head=None.')
    return kind, int(head['in_channels'])


def layout_mismatch(branch: str, recognizer_type: str, kind: str,
                    got: str) -> str:
    """The message for data in a layout the branch cannot take.

    Args:
        branch (str): the encoder, e.g. ``'encoders.visual'``.
        recognizer_type (str): the stock recognizer's type.
        kind (str): its kind, a key of :data:`LAYOUTS`.
        got (str): what the data gives (the pipeline's FormatShape or the
            batch shape).
    """
    fmt, batch, _ = LAYOUTS[kind]
    fix = f"FormatShape(input_format='{fmt}') in the pipeline (and " \
        f"format_shape='{fmt}' in its data_preprocessor entry: the stock " \
        'one when the entry is left out)' if fmt else \
        "the stock recognizer's audio pipeline (FormatAudioShape)"
    if kind in OTHER_KIND:
        fix += f', or {OTHER_KIND[kind]}'
    kind = '' if kind == recognizer_type else f' ({kind})'
    return (f'{branch} is a stock {recognizer_type}{kind} branch; it '
            f'takes {fmt or "audio"} inputs, batches {batch}; but {got}. '
            f'Fix: {fix}.')


def stock_preprocessor(cfg: Mapping) -> dict:
    """The ``ActionDataPreprocessor`` entry equivalent to the stock one.

    mmaction2 gives a recognizer without ``data_preprocessor`` a plain
    ``ActionDataPreprocessor()`` (stacking only), and so does this.
    """
    pre = dict(cfg.get('data_preprocessor') or
               dict(type='ActionDataPreprocessor'))
    if pre.get('type', 'ActionDataPreprocessor') != 'ActionDataPreprocessor':
        raise ValueError(
            f'recognizer {cfg["type"]}: data_preprocessor type '
            f'{pre["type"]!r} cannot be copied into MultiModalDataPreprocessor'
            '; give data_preprocessor.preprocessors an entry for this '
            "encoder's input_key yourself.")
    if pre.get('blending') is not None:
        raise ValueError(
            f'recognizer {cfg["type"]}: data_preprocessor.blending mixes one '
            'modality and its labels alone, which breaks the joint labels of '
            "a multi-modal batch; use train_perturbation=dict(type='Mixup') or give "
            "the preprocessors entry for this encoder's input_key yourself.")
    return dict(type='ActionDataPreprocessor',
                **{k: pre[k] for k in PREPROCESSOR_KEYS if k in pre})


def with_stock_preprocessors(encoders: Mapping[str, dict],
                             data_preprocessor: Optional[dict]
                             ) -> Tuple[Dict[str, dict], Optional[dict]]:
    """Resolve ``recognizer`` references and fill their preprocessor entries.

    For every encoder with ``recognizer=``: if ``data_preprocessor`` is None
    a ``MultiModalDataPreprocessor`` is created; if it is a
    ``MultiModalDataPreprocessor`` without an entry for the encoder's
    ``input_key``, the stock recognizer's preprocessor (mean, std,
    format_shape, to_rgb) becomes that entry. An entry the user gave is kept,
    but its ``format_shape`` must be the stock one (the branch's input
    layout depends on it).

    Returns:
        tuple: the encoders with resolved recognizer dicts, and the data
        preprocessor config.
    """
    encoders = {name: dict(cfg) for name, cfg in encoders.items()}
    stock = {}
    for name, cfg in encoders.items():
        if cfg.get('recognizer') is not None:
            cfg['recognizer'] = resolve_recognizer(cfg['recognizer'])
            stock[name] = cfg
    if not stock:
        return encoders, data_preprocessor
    if data_preprocessor is None:
        data_preprocessor = dict(type='MultiModalDataPreprocessor',
                                 preprocessors={})
    if data_preprocessor.get('type') != 'MultiModalDataPreprocessor':
        return encoders, data_preprocessor
    data_preprocessor = copy.deepcopy(dict(data_preprocessor))
    entries = dict(data_preprocessor.get('preprocessors') or {})
    for name, cfg in stock.items():
        key = cfg.get('input_key')
        derived = stock_preprocessor(cfg['recognizer'])
        given = entries.get(key)
        if given is None:
            entries[key] = derived
            continue
        fmt = given.get('format_shape', 'NCHW')
        if fmt != derived.get('format_shape', 'NCHW'):
            raise ValueError(
                f'data_preprocessor.preprocessors.{key}.format_shape is '
                f'{fmt!r}, but encoders.{name} is a stock '
                f'{cfg["recognizer"]["type"]} whose preprocessor uses '
                f'{derived.get("format_shape", "NCHW")!r}; drop the entry to '
                'use the stock one, or make the two agree.')
    data_preprocessor['preprocessors'] = entries
    return encoders, data_preprocessor


@MODELS.register_module()
@reject_unknown_keys
class StockBranch(BaseModule):
    """Backbone and neck of a stock mmaction2 recognizer as one branch.

    The stock recognizer is built (so torchvision, timm and mmpretrain
    backbones work as in mmaction2) without its ``cls_head``; its
    ``backbone`` and ``neck`` become this module's children, and its own
    ``extract_feat`` runs them, so the segment handling (TSM's shift over
    ``backbone.num_segments``, the 2-D neck's segment layout) is
    mmaction2's. The output is average-pooled over all dims after the
    channels (tuple outputs such as SlowFast's pathways are pooled and
    concatenated) and averaged over the rows of each sample: TSN's
    ``AvgConsensus`` over segments, or the clips of a 3-D or audio input.
    The stock ``train_cfg``/``test_cfg`` (head and test-view settings) are
    not used by a branch.

    Args:
        recognizer (str | dict): a stock recognizer config or a reference
            to a config file (see :func:`resolve_recognizer`).

    Shapes: ``[B, N, *clip]`` -> ``[B, D]`` with ``D = cls_head.in_channels``;
    ``clip`` is ``[C, H, W]`` (Recognizer2D, N segments), ``[C, T, H, W]``
    (Recognizer3D) or ``[1, T, F]`` (RecognizerAudio).

    Example:
        >>> encoder = dict(
        ...     input_key='imgs',
        ...     recognizer='mmaction::recognition/tsn/tsn_imagenet-'
        ...     'pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py')
    """

    def __init__(self, recognizer: Union[str, dict]) -> None:
        super().__init__()
        cfg = resolve_recognizer(recognizer)
        self.kind, self.feat_dim = check_recognizer(cfg)
        cfg.update(cls_head=None, train_cfg=None, test_cfg=None)
        stock = MODELS.build(cfg)
        self.backbone = stock.backbone
        self.neck = stock.neck if stock.with_neck else None
        # A bound method, not a child module: the stock recognizer's own
        # data preprocessor stays out of this model's parameters and state
        # dict, while its extract_feat runs the shared backbone and neck.
        self._extract_feat = stock.extract_feat
        self.recognizer_type = cfg['type']
        #: The encoder in messages; ModalityEncoder sets its name.
        self.branch = 'a StockBranch'

    def forward(self, x: Tensor) -> Tensor:
        # A clip batch in a 2-D branch (or the reverse) otherwise fails deep
        # in the backbone with torch's conv shape error, naming no config.
        dims = LAYOUTS[self.kind][2]
        if x.ndim != dims:
            raise ValueError(layout_mismatch(
                self.branch, self.recognizer_type, self.kind,
                f'the batch has shape {list(x.shape)} ({x.ndim} dims, not '
                f'{dims})'))
        batch, segments = x.shape[:2]
        period = getattr(self.backbone, 'num_segments', None)
        if self.kind == 'Recognizer2D' and period and segments % period:
            raise ValueError(
                f'{self.recognizer_type}: the backbone shifts features over '
                f'backbone.num_segments={period} segments, but a sample has '
                f'{segments}; make SampleFrames num_clips a multiple of it.')
        stage = 'backbone' if self.kind == 'RecognizerAudio' else 'neck'
        out, _ = self._extract_feat(x, stage=stage)
        parts = out if isinstance(out, (tuple, list)) else (out, )
        pooled = [p.flatten(2).mean(2) if p.ndim > 2 else p for p in parts]
        feats = torch.cat(pooled, 1)
        if feats.shape[-1] != self.feat_dim:
            raise ValueError(
                f'{self.recognizer_type}: the pooled features have '
                f'{feats.shape[-1]} channels but cls_head.in_channels is '
                f'{self.feat_dim}; the config and its backbone disagree.')
        # Rows are sample-major (segments, clips, or TSM's temporally pooled
        # segments), so the per-sample mean is the segment consensus.
        return feats.reshape(batch, -1, self.feat_dim).mean(1)


def stock_branch_args(recognizer: Union[str, dict], backbone: Optional[dict],
                      feat_dim: Optional[int], temporal: str
                      ) -> Tuple[dict, int, str]:
    """``(backbone, feat_dim, temporal)`` of an encoder with ``recognizer``.

    The encoder's own ``backbone`` and ``temporal`` must be left out, and a
    ``feat_dim`` given anyway must equal the stock ``cls_head.in_channels``.
    """
    if backbone is not None:
        raise ValueError('an encoder takes either backbone or recognizer, '
                         'not both; the recognizer brings its backbone.')
    if temporal not in ('none', 'clips'):
        raise ValueError(f'temporal={temporal!r} does not apply to a stock '
                         'recognizer: it follows the recognizer type '
                         '(segments for Recognizer2D, clips for 3-D and '
                         'audio); leave temporal out.')
    cfg = resolve_recognizer(recognizer)
    _, in_channels = check_recognizer(cfg)
    if feat_dim is not None and int(feat_dim) != in_channels:
        raise ValueError(f'feat_dim={feat_dim} disagrees with the stock '
                         f'cls_head.in_channels={in_channels}; leave feat_dim '
                         'out.')
    return dict(type='StockBranch', recognizer=cfg), in_channels, 'clips'
