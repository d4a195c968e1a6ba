"""Wraps any mmaction2 backbone into a per-modality feature extractor."""
import logging
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import torch
from mmaction.registry import MODELS
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor

from crmt_mm.utils import reject_unknown_keys
from .stock_branch import StockBranch, stock_branch_args

#: Where every mmaction2 recognizer (Recognizer2D/3D, RecognizerAudio)
#: stores its backbone in a checkpoint's state_dict.
STOCK_BACKBONE_PREFIX = 'backbone.'
PRETRAINED_KEYS = ('type', 'checkpoint', 'prefix', 'map_location', 'strict')


@reject_unknown_keys
class ModalityEncoder(BaseModule):
    """One modality's encoder: backbone plus pooling to one vector.

    An mmengine ``BaseModule``: ``CRMTRecognizer.init_weights()`` reaches
    it and, through it, the backbone's own ``init_weights`` (so backbone
    ``pretrained=`` and ``init_cfg`` are honoured; a missing or unreadable
    file is an error naming this branch).

    A ``Pretrained`` entry of this encoder's ``init_cfg`` initialises the
    *backbone* from a checkpoint: the keys under ``prefix`` (stripped) must
    be exactly the backbone's, with equal shapes, else the error names the
    file, the branch and the keys. The default prefix ``'backbone.'`` reads a
    stock single-modality mmaction2 checkpoint (a Recognizer2D/3D RGB model
    for the visual branch, a RecognizerAudio model for the audio branch;
    their ``cls_head`` keys are ignored); ``'encoders.visual.backbone.'``
    reads a branch of a CRMT checkpoint and ``''`` a bare backbone file. The
    log lists how many keys were loaded and which were ignored or missing.

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
            Defaults to None.
        recognizer (str | dict, optional): a stock mmaction2 recognizer
            config (or ``'mmaction::<config>.py'``) whose backbone and neck
            become this encoder (see :class:`StockBranch`); sets
            ``backbone``, ``feat_dim`` (its ``cls_head.in_channels``) and
            ``temporal='clips'``. Its own ``pretrained``/``init_cfg`` entries
            are honoured by ``init_weights``; a ``Pretrained`` entry here
            loads into the :class:`StockBranch`, whose keys are
            ``backbone.*``/``neck.*``, so use ``prefix=''`` with
            ``strict=False`` for a stock checkpoint. Defaults to None.
        init_cfg (dict | list[dict], optional): mmengine init configs; a
            ``dict(type='Pretrained', checkpoint=..., prefix='backbone.',
            map_location='cpu', strict=True)`` entry loads the backbone as
            described above (``strict=False`` skips missing or mis-shaped
            keys with a warning listing them). Defaults to None.
        name (str): the modality name used in messages; filled in by
            ``CRMTRecognizer`` from its ``encoders`` key.
            Defaults to ``'encoder'``.

    Shapes: ``[B, N, *input_shape]`` -> ``[B, feat_dim]`` (mean over the N
    clips and, for ``'fold'``, the T frames; backbone outputs with spatial
    dims are globally average-pooled).

    Example:
        >>> visual = dict(
        ...     input_key='imgs', feat_dim=512, temporal='fold',
        ...     backbone=dict(type='ResNet', depth=18),
        ...     init_cfg=dict(type='Pretrained', prefix='backbone.',
        ...                   checkpoint='work_dirs/tsn_r18/epoch_100.pth'))
    """
    TEMPORAL = ('fold', 'channels', 'none', 'clips')

    def __init__(self, input_key: str, backbone: Optional[dict] = None,
                 feat_dim: Optional[int] = None, temporal: str = 'none',
                 input_shape: Optional[Sequence[int]] = None,
                 recognizer: Optional[Union[str, dict]] = None,
                 init_cfg=None, name: str = 'encoder') -> None:
        self.name = name
        pretrained, others = self._split_init_cfg(init_cfg)
        super().__init__(init_cfg=others or None)
        if recognizer is not None:
            backbone, feat_dim, temporal = stock_branch_args(
                recognizer, backbone, feat_dim, temporal)
        elif backbone is None or feat_dim is None:
            raise ValueError(f'encoders.{name} needs backbone and feat_dim, '
                             'or a stock recognizer=...')
        if temporal not in self.TEMPORAL:
            raise ValueError(f'temporal must be one of {self.TEMPORAL}, got '
                             f'{temporal!r}')
        if int(feat_dim) <= 0:
            raise ValueError(f'feat_dim must be positive, got {feat_dim}')
        self.input_key = input_key
        self.backbone = MODELS.build(backbone)
        if isinstance(self.backbone, StockBranch):
            self.backbone.branch = f'encoders.{name}'
        self.feat_dim = int(feat_dim)
        self.temporal = temporal
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.pretrained_cfg = pretrained

    def _split_init_cfg(self, init_cfg):
        """(the validated Pretrained entry or None, the other entries)."""
        cfgs = [] if init_cfg is None else (
            [init_cfg] if isinstance(init_cfg, dict) else list(init_cfg))
        pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
        others = [c for c in cfgs if c.get('type') != 'Pretrained']
        if len(pretrained) > 1:
            raise ValueError(f'encoders.{self.name}.init_cfg has '
                             f'{len(pretrained)} Pretrained entries; keep '
                             'one.')
        if not pretrained:
            return None, others
        cfg = dict(prefix=STOCK_BACKBONE_PREFIX, map_location='cpu',
                   strict=True)
        cfg.update(pretrained[0])
        unknown = sorted(set(cfg) - set(PRETRAINED_KEYS))
        if unknown or not isinstance(cfg.get('checkpoint'), str):
            raise ValueError(
                f'encoders.{self.name}.init_cfg Pretrained needs a '
                f'checkpoint path (str) and accepts {list(PRETRAINED_KEYS)};'
                f' got {pretrained[0]}.')
        return cfg, others

    def init_weights(self) -> None:
        """The backbone's own initialisation, then the Pretrained entry."""
        if self.is_init:
            return
        try:
            super().init_weights()
        except (OSError, RuntimeError, KeyError, ValueError,
                ImportError) as err:
            sources = self._weight_sources()
            where = ' from ' + ', '.join(repr(s) for _, s in sources) \
                if sources else ''
            message = (f'encoders.{self.name}: initialising the backbone'
                       f'{where} failed: {type(err).__name__}: {err}')
            remote = [(k, s) for k, s in sources if '://' in s]
            if remote and not isinstance(err, FileNotFoundError):
                message += '. ' + self._offline_fix(*remote[0])
            if isinstance(err, FileNotFoundError):
                raise FileNotFoundError(message) from err
            raise RuntimeError(message) from err
        if self.pretrained_cfg is not None:
            self._load_pretrained(self.pretrained_cfg)

    def _weight_sources(self) -> List[Tuple[str, str]]:
        """``(config key, file or URL)`` of every ``pretrained`` and
        ``init_cfg`` checkpoint inside the backbone (a stock branch's
        backbone and neck are under ``recognizer``)."""
        root = f'model.encoders.{self.name}.' + (
            'recognizer' if isinstance(self.backbone, StockBranch)
            else 'backbone')
        found = []
        for path, module in self.backbone.named_modules():
            key = f'{root}.{path}' if path else root
            if isinstance(getattr(module, 'pretrained', None), str):
                found.append((f'{key}.pretrained', module.pretrained))
            init = getattr(module, 'init_cfg', None)
            for cfg in [init] if isinstance(init, dict) else init or []:
                if isinstance(cfg, dict) and isinstance(
                        cfg.get('checkpoint'), str):
                    found.append((f'{key}.init_cfg', cfg['checkpoint']))
        return found

    def _offline_fix(self, key: str, url: str) -> str:
        """How to do without the download of ``url`` (set at ``key``)."""
        cache = osp.join(torch.hub.get_dir(), 'checkpoints')
        target = url
        if url.startswith(('torchvision://', 'modelzoo://')):
            # mmengine maps these names to torchvision's model zoo URLs.
            try:
                from mmengine.runner.checkpoint import get_torchvision_models
                target = get_torchvision_models()[url.split('://', 1)[1]]
            except (ImportError, KeyError):
                target = None
        where = (f'copy {osp.basename(target)} (from {target}) into {cache}'
                 if target else f'install torchvision and put the file it '
                 f'lists for {url!r} into {cache}')
        fix = (f'No network? Download the weights on a machine that has '
               f'it and {where}: torch reads that cache (moved by '
               '$TORCH_HOME) before downloading. Or start the branch without '
               f'them: set {key}=None')
        if isinstance(self.backbone, StockBranch):
            fix += (' (a recognizer given as a config file reference, '
                    "'mmaction::...', cannot be edited with --cfg-options: "
                    "give recognizer=dict(...) with that file's model and "
                    'backbone.pretrained=None instead)')
        return fix + '.'

    def _load_pretrained(self, cfg: dict) -> None:
        checkpoint, prefix = cfg['checkpoint'], cfg['prefix']
        branch = f'encoders.{self.name}'
        if '://' not in checkpoint and not osp.isfile(checkpoint):
            raise FileNotFoundError(
                f'{branch}: init_cfg checkpoint {checkpoint!r} not found.')
        state = CheckpointLoader.load_checkpoint(
            checkpoint, map_location=cfg['map_location'])
        state = state.get('state_dict', state)
        taken = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix)}
        own = self.backbone.state_dict()
        missing = sorted(k for k in own if k not in taken)
        unexpected = sorted(k for k in taken if k not in own)
        mismatched = sorted(
            f'{k}: file {tuple(taken[k].shape)} vs backbone '
            f'{tuple(own[k].shape)}' for k in own
            if k in taken and taken[k].shape != own[k].shape)
        problems = (f'missing {len(missing)} {missing[:5]}, unexpected '
                    f'{len(unexpected)} {unexpected[:5]}, shape mismatches '
                    f'{len(mismatched)} {mismatched[:5]}')
        unfit = missing or unexpected or mismatched
        if not taken or (cfg['strict'] and unfit):
            raise ValueError(
                f'{branch}: checkpoint {checkpoint!r} does not fit the '
                f'backbone {type(self.backbone).__name__} under prefix '
                f'{prefix!r} ({len(taken)} keys there): {problems}. Check '
                'the prefix (backbone. for a stock mmaction2 recognizer) and '
                "that the backbone config matches the checkpoint's, or set "
                'strict=False to load only the matching keys.')
        good = {k: v for k, v in taken.items()
                if k in own and v.shape == own[k].shape}
        self.backbone.load_state_dict(good, strict=False)
        ignored = len(state) - len(taken)
        print_log(
            f'{branch}: loaded {len(good)} of {len(own)} backbone tensors '
            f'from {checkpoint!r} (prefix {prefix!r}; {ignored} keys outside '
            f'the prefix ignored); missing: {missing or "none"}; '
            f'mis-shaped: {mismatched or "none"}; unexpected: '
            f'{unexpected or "none"}', logger='current',
            level=logging.WARNING if len(good) < len(own) else logging.INFO)

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
