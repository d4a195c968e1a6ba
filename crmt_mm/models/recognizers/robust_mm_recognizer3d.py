"""mmaction2's multi-input ``MMRecognizer3D`` under the robust evaluation.

The robust evaluation needs a model that maps a dict of modality tensors to
fused logits (``crmt_mm/evaluation/contract.py``). mmaction2's
``MMRecognizer3D`` (e.g. RGBPoseConv3D + RGBPoseHead) takes exactly such a
dict, keyed by input key, but fuses its per-stream scores only inside
``AccMetric``. :class:`RobustMMRecognizer3D` is the same model (same
parameters and checkpoints, same ``loss``/``predict``) plus the contract.
"""
from typing import Dict, Mapping, Optional, Sequence

import torch
from mmaction.models.recognizers import MMRecognizer3D
from mmaction.registry import MODELS
from torch import Tensor

from crmt_mm.attacks import InputSpace
from .input_spaces import preprocessor_input_spaces

FUSIONS = ('prob', 'logit')


@MODELS.register_module()
class RobustMMRecognizer3D(MMRecognizer3D):
    """``MMRecognizer3D`` with the robust-evaluation model contract.

    Modalities are the data preprocessor's input keys (e.g. ``imgs``,
    ``heatmap_imgs``), so attacks are named ``pgd_imgs@0.5``. The fused
    logits combine the head's per-stream scores (``RGBPoseHead``:
    ``{'rgb': [B*V, K], 'pose': [B*V, K]}``; a head returning one tensor is
    used as is), averaged over the V views of each sample:

    * ``fusion='prob'``: ``log(sum_s w_s p_s / sum_s w_s)`` with ``p_s``
      the view-averaged softmax of stream s; its argmax is AccMetric's
      weighted RGBPose prediction (``RGBPose_1:1`` for equal weights) and
      its cross-entropy is ``-log`` of that fused probability;
    * ``fusion='logit'``: ``sum_s w_s z_s`` with ``z_s`` the view-averaged
      logits of stream s.

    Note:
        RGBPoseConv3D's pathways exchange lateral features, so one
        modality's features cannot be removed on their own:
        ``fused_logits(x, drop=(m,))`` (``MissingModality(mode='feature')``)
        zeroes the *input* of m (the dataset mean in the normalised space),
        the same as ``MissingModality(mode='input')``. Certification is not
        available: the model has no per-modality logits z^(m)(x^(m)) of its
        own input alone, which the certified radius needs.

    Args:
        backbone (dict): as ``MMRecognizer3D``.
        cls_head (dict, optional): as ``MMRecognizer3D``. Defaults to None.
        neck (dict, optional): as ``MMRecognizer3D``. Defaults to None.
        train_cfg (dict, optional): Defaults to None.
        test_cfg (dict, optional): Defaults to None.
        data_preprocessor (dict, optional): normally
            ``MultiModalDataPreprocessor``. Defaults to None.
        fusion (str): ``'prob'`` or ``'logit'``. Defaults to ``'prob'``.
        fusion_weights (Sequence[float], optional): one weight per head
            stream (the head's ``loss_components`` order). Defaults to None
            (equal weights).
        input_ranges (dict, optional): modality -> valid raw range
            ``(lo, hi)`` or None; defaults to (0, 255) for normalised
            inputs, None (never clamped) else. Defaults to None.

    Example:
        >>> model = dict(type='RobustMMRecognizer3D',
        ...              backbone=dict(type='RGBPoseConv3D', ...),
        ...              cls_head=dict(type='RGBPoseHead', num_classes=60,
        ...                            in_channels=[2048, 512]),
        ...              data_preprocessor=dict(
        ...                  type='MultiModalDataPreprocessor', ...))
        >>> test_cfg = dict(type='RobustTestLoop', perturbations=[
        ...     dict(type='UniModalPGD', modality='imgs', eps=1.0)])
    """

    def __init__(self, backbone: dict, cls_head: Optional[dict] = None,
                 neck: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 fusion: str = 'prob',
                 fusion_weights: Optional[Sequence[float]] = None,
                 input_ranges: Optional[Mapping[str, object]] = None
                 ) -> None:
        super().__init__(backbone=backbone, cls_head=cls_head, neck=neck,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor)
        if fusion not in FUSIONS:
            raise ValueError(f'fusion must be one of {FUSIONS}, got '
                             f'{fusion!r}')
        preprocessors = getattr(self.data_preprocessor, 'preprocessors',
                                None)
        if not preprocessors:
            raise ValueError(
                'RobustMMRecognizer3D needs a MultiModalDataPreprocessor '
                '(data_preprocessor.preprocessors keyed by input key), got '
                f'{type(self.data_preprocessor).__name__}')
        if not self.with_cls_head:
            raise ValueError('RobustMMRecognizer3D needs a cls_head')
        self.modalities = tuple(preprocessors)
        self.num_classes = self.cls_head.num_classes
        if fusion_weights is not None:
            fusion_weights = [float(w) for w in fusion_weights]
            if not fusion_weights or min(fusion_weights) < 0 or \
                    sum(fusion_weights) <= 0:
                raise ValueError('fusion_weights must be >= 0 with a '
                                 f'positive sum, got {fusion_weights}')
        self.fusion, self.fusion_weights = fusion, fusion_weights
        ranges = dict(input_ranges or {})
        unknown = sorted(set(ranges) - set(self.modalities))
        if unknown:
            raise ValueError(f'input_ranges names unknown modalities '
                             f'{unknown}; the model has '
                             f'{list(self.modalities)}')
        self.input_ranges = ranges

    def extract_feat(self, inputs: Dict[str, Tensor], *args, **kwargs):
        """As ``MMRecognizer3D.extract_feat``, on a copy of ``inputs``.

        The stock method reshapes the caller's dict in place; the robust
        evaluation reuses that dict after the clean ``predict``.
        """
        return super().extract_feat(dict(inputs), *args, **kwargs)

    # ---- the robust-evaluation contract ------------------------------------

    def batch_to_modalities(self, data_batch, training: bool = False,
                            preprocessed: bool = False):
        """A batch -> ``({input key: [B, V, ...]}, labels [B], samples)``.

        Args:
            data_batch (dict): a collated batch, or with ``preprocessed``
                the data preprocessor's output. Defaults as in
                ``CRMTRecognizer.batch_to_modalities``.
            training (bool): Defaults to False.
            preprocessed (bool): Defaults to False.
        """
        data = data_batch if preprocessed else \
            self.data_preprocessor(data_batch, training)
        inputs, samples = data['inputs'], data['data_samples']
        if set(inputs) != set(self.modalities):
            raise ValueError(
                f'the data provides inputs {sorted(inputs)} but the model '
                f'expects {sorted(self.modalities)}')
        labels = torch.cat([s.gt_label.view(-1)[:1] for s in samples])
        device = next(iter(inputs.values())).device
        return ({m: inputs[m] for m in self.modalities},
                labels.to(device), samples)

    def fused_logits(self, x: Mapping[str, Tensor],
                     drop: Sequence[str] = ()) -> Tensor:
        """``{input key: [B, V, ...]}`` -> fused logits ``[B, K]``;
        ``drop`` zeroes those inputs (see the class note)."""
        unknown = sorted(set(drop) - set(self.modalities))
        if unknown:
            raise ValueError(f'drop names unknown modalities {unknown}')
        batch = next(iter(x.values())).shape[0]
        flat = {m: (torch.zeros_like(v) if m in drop else v).reshape(
            (-1,) + tuple(v.shape[2:])) for m, v in x.items()}
        scores = self.cls_head(self.backbone(**flat))
        if isinstance(scores, Tensor):
            scores = {'fused': scores}
        streams = list(scores.values())
        weights = self.fusion_weights or [1.0] * len(streams)
        if len(weights) != len(streams):
            raise ValueError(f'fusion_weights has {len(weights)} entries '
                             f'but the head gives {len(streams)} streams '
                             f'{list(scores)}')
        if self.fusion == 'logit':
            return sum(w * s.view(batch, -1, s.shape[-1]).mean(1)
                       for w, s in zip(weights, streams))
        prob = sum(w * s.softmax(-1).view(batch, -1, s.shape[-1]).mean(1)
                   for w, s in zip(weights, streams)) / sum(weights)
        return prob.clamp_min(torch.finfo(prob.dtype).tiny).log()

    def input_spaces(self) -> Dict[str, Optional[InputSpace]]:
        """Raw-unit statistics and valid range of every input."""
        return preprocessor_input_spaces(
            self.data_preprocessor, {m: m for m in self.modalities},
            self.input_ranges)
