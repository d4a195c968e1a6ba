"""Multi-modal late-fusion recognizer with CRMT's two training phases."""
import json
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import torch
from mmaction.registry import MODELS
from mmengine.logging import MessageHub
from mmengine.model import BaseModel, ModuleDict, is_model_wrapper
from torch import Tensor, nn

from crmt_mm.attacks import InputSpace
from crmt_mm.certification import certified_radius
from crmt_mm.utils import reject_unknown_keys
from ..train_perturbations import build_train_perturbation
from .input_spaces import preprocessor_input_spaces
from .modality_encoder import ModalityEncoder
from .stock_branch import (LAYOUTS, OTHER_KIND, layout_mismatch,
                           with_stock_preprocessors)

A_CONSTRAINTS = ('clamp', 'abs', 'none')
#: FormatShape input_format -> the branch kind that takes it.
LAYOUTS_OF_FORMATS = {'NCHW': 'Recognizer2D', 'NCHW_Flow': 'Recognizer2D',
                      'NCTHW': 'Recognizer3D'}
# Data-sample meta keys naming a clip: rawframe datasets (frame_dir) and
# video datasets (filename).
CLIP_ID_KEYS = ('frame_dir', 'filename')


def pipeline_transforms(dataset) -> list:
    """The transforms of a dataset's pipeline, through dataset wrappers
    (``RepeatDataset``, ``ClassBalancedDataset``: ``.dataset``;
    ``ConcatDataset``: the first of ``.datasets``); ``[]`` when there is
    none to see (a plain torch dataset)."""
    for _ in range(8):  # wrappers nest a few levels at most
        if hasattr(dataset, 'pipeline'):
            return list(getattr(dataset.pipeline, 'transforms', []) or [])
        inner = getattr(dataset, 'dataset', None)
        if inner is None and getattr(dataset, 'datasets', None):
            inner = dataset.datasets[0]
        if inner is None:
            return []
        dataset = inner
    return []


def check_loader(runner, dataloader, where: str) -> None:
    """Check ``dataloader``'s pipeline against the runner's model before
    the first batch (see :meth:`CRMTRecognizer.check_data_pipeline`);
    other models and loaders without a dataset pass.

    Args:
        runner: the mmengine runner.
        dataloader: a built dataloader.
        where (str): its config key, for messages (``'train_dataloader'``).
    """
    model = runner.model
    if is_model_wrapper(model):  # DDP
        model = model.module
    check = getattr(model, 'check_data_pipeline', None)
    dataset = getattr(dataloader, 'dataset', None)
    if check is not None and dataset is not None:
        check(dataset, where)


def encode_identity(identity: dict) -> Tensor:
    """A JSON-able dict -> int64 character codes (a checkpoint buffer)."""
    text = json.dumps(identity, sort_keys=True)
    return torch.tensor(list(text.encode('utf-8')), dtype=torch.long)


def decode_identity(codes: Tensor) -> dict:
    """Inverse of :func:`encode_identity`; ``{}`` for unreadable codes."""
    try:
        return json.loads(bytes(codes.long().tolist()).decode('utf-8'))
    except (ValueError, TypeError):
        return {}


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; parameters were not updated."""


@MODELS.register_module()
@reject_unknown_keys
class CRMTRecognizer(BaseModel):
    """Late-fusion recognizer over any number (>= 2) of modalities.

    Each modality has an encoder (any mmaction2 backbone plus pooling, see
    :class:`ModalityEncoder`), a fusion head (:class:`CRMTHead` or the JT
    baseline :class:`ConcatHead`) combines them. Phase 1 minimises the
    configured :class:`CRMTMarginLoss` on the training inputs, perturbed
    in training mode by the optional ``train_perturbation``; phase 2
    (switched on by :class:`CRMTPhaseSwitchHook`) trains only the
    integration weights ``a`` to maximise the certified radius r(x) with
    the encoders frozen in eval mode.

    Note:
        ``phase`` (1 or 2) and ``tau`` ([M, K], the per-modality, per-class
        Lipschitz estimates; zeros until estimated) are persistent buffers,
        so every checkpoint carries them and resume restores them.

        Modalities are identified by name, never by their position in the
        config: ``modalities`` is the *sorted* tuple of encoder names, and
        every per-modality block or row (``head.fc`` column blocks, the rows
        of ``a`` and ``tau``, cached step-2 logits, report rows) follows it.
        A config whose ``encoders`` are listed in another order (such as the
        key-sorted copy mmengine dumps into the work dir) builds the same
        model. The persistent buffer ``model_identity`` records the
        modality names, input keys, feature dims, ``num_classes`` and head
        normalisation; loading a checkpoint that records anything else, or
        nothing (written before this record existed), is refused with a
        message naming both sides (see ``tools/convert_checkpoint.py``).

    Args:
        encoders (dict): modality name -> dict(``input_key``, ``backbone``,
            ``feat_dim``, optional ``temporal``, ``input_shape`` and
            ``init_cfg``, see :class:`ModalityEncoder`), or
            dict(``input_key``, ``recognizer``) for a stock mmaction2
            recognizer whose preprocessor fills this input key's entry of
            ``data_preprocessor`` unless given (:class:`StockBranch`); their
            order does not matter.
        head (dict): fusion head config (``num_classes`` required; the
            recognizer fills ``in_channels``).
        loss (dict): step-1 loss. Defaults to ``dict(type='CRMTMarginLoss')``.
        train_perturbation (dict, optional): how step-1 training inputs are
            perturbed, a type of
            :data:`~crmt_mm.models.train_perturbations.TRAIN_PERTURBATIONS`:
            ``'MultiModalPGD'`` (adversarial training), ``'Mixup'`` or
            ``'GaussianNoise'``. Defaults to None (clean inputs).
        competitor (str): competitor classes of r(x) in phase 2, ``'min'``
            (the bound) or ``'runner_up'`` (reference). Defaults to ``'min'``.
        a_constraint (str): ``'clamp'`` (a >= 0, enforced by the phase hook
            after every step), ``'abs'`` (|a| in the radius) or ``'none'``
            (reference: a in the radius). Defaults to ``'clamp'``.
        input_ranges (dict, optional): modality -> valid raw range
            ``(lo, hi)`` or None, for clamping perturbed inputs. Defaults to
            (0, 255) for modalities the preprocessor normalises, None else.
        data_preprocessor (dict): normally ``MultiModalDataPreprocessor``.
        init_cfg (dict, optional): Defaults to None.

    Example:
        >>> model = dict(
        ...     type='CRMTRecognizer',
        ...     encoders=dict(
        ...         visual=dict(input_key='imgs', feat_dim=512,
        ...                     temporal='fold',
        ...                     backbone=dict(type='ResNet', depth=18)),
        ...         audio=dict(input_key='audios', feat_dim=512,
        ...                    backbone=dict(type='ResNet', depth=18,
        ...                                  in_channels=1))),
        ...     head=dict(type='CRMTHead', num_classes=31),
        ...     loss=dict(type='CRMTMarginLoss', rho=2.0),
        ...     train_perturbation=dict(type='MultiModalPGD', eps=0.1,
        ...                             steps=5))
    """

    def __init__(self, encoders: Mapping[str, dict], head: dict,
                 loss: Optional[dict] = None,
                 train_perturbation: Optional[dict] = None,
                 competitor: str = 'min',
                 a_constraint: str = 'clamp',
                 input_ranges: Optional[Mapping[str, object]] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg=None) -> None:
        # Before BaseModel builds the data preprocessor: stock branches
        # bring their preprocessor entries.
        encoders, data_preprocessor = with_stock_preprocessors(
            encoders, data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        if len(encoders) < 2:
            raise ValueError('CRMTRecognizer needs at least 2 modalities, '
                             f'got {list(encoders)}')
        if competitor not in ('min', 'runner_up'):
            raise ValueError("competitor must be 'min' or 'runner_up', got "
                             f'{competitor!r}')
        if a_constraint not in A_CONSTRAINTS:
            raise ValueError(f'a_constraint must be one of {A_CONSTRAINTS}, '
                             f'got {a_constraint!r}')
        # mmengine's ModuleDict (not torch's) so that init_weights() reaches
        # every encoder and its backbone's pretrained/init_cfg.
        self.encoders = ModuleDict()
        for name in sorted(encoders):
            cfg = dict(encoders[name])
            if 'name' in cfg:
                raise ValueError(
                    f'encoders.{name}: remove the key name; CRMTRecognizer '
                    'names every encoder after its key in encoders.')
            try:
                self.encoders[name] = ModalityEncoder(name=name, **cfg)
            except TypeError as err:
                raise ValueError(f'encoders.{name}: {err}') from err
        self.modalities = tuple(self.encoders)
        # mmaction's MultiModalDataPreprocessor fails with a bare KeyError
        # at the first batch when an input key has no preprocessor.
        preprocessors = getattr(self.data_preprocessor, 'preprocessors',
                                None)
        uncovered = sorted({e.input_key for e in self.encoders.values()} -
                           set(preprocessors or {}))
        if preprocessors is not None and uncovered:
            raise ValueError(
                f'data_preprocessor.preprocessors has no entry for the input '
                f'keys {uncovered} of the encoders (it has '
                f'{sorted(preprocessors)}); key it by the encoders\' '
                "input_key values, which are PackActionInputs' collect_keys.")
        if preprocessors is not None:
            # mmaction's MultiModalDataPreprocessor looks every data key up
            # in its entries: a key the model does not know fails there
            # with a bare KeyError, before split_inputs could name both
            # sides. Checked for every batch of every loop (training, tau,
            # evaluation); the loops of crmt_mm check the pipeline earlier.
            self.data_preprocessor.register_forward_pre_hook(
                self._check_batch_keys, with_kwargs=True)
        head = dict(head)
        head['in_channels'] = {m: e.feat_dim for m, e in self.encoders.items()}
        self.head = MODELS.build(head)
        self.num_classes = self.head.num_classes
        self.loss_module = MODELS.build(
            loss if loss is not None else dict(type='CRMTMarginLoss'))
        self.train_perturbation = build_train_perturbation(
            train_perturbation, self.modalities)
        self.competitor = competitor
        self.a_constraint = a_constraint
        ranges = dict(input_ranges or {})
        unknown = set(ranges) - set(self.modalities)
        if unknown:
            raise ValueError(f'input_ranges names unknown modalities '
                             f'{sorted(unknown)}; the model has '
                             f'{list(self.modalities)}')
        self.input_ranges = ranges
        self.register_buffer('phase', torch.tensor(1, dtype=torch.long))
        self.register_buffer(
            'tau', torch.zeros(len(self.modalities), self.num_classes))
        # int64 codes of a JSON text: buffers travel with every checkpoint,
        # and an integer buffer survives SyncBuffersHook's mean over ranks
        # exactly (uint8 would overflow in its sum).
        self.register_buffer('model_identity', encode_identity(
            self.identity()))
        self._register_load_state_dict_pre_hook(self._check_checkpoint)

    # Buffers that older checkpoints may lack; they keep their defaults.
    OPTIONAL_KEYS = ('phase', 'tau')
    IDENTITY_KEY = 'model_identity'

    def identity(self) -> dict:
        """What a checkpoint must agree on: per modality (sorted by name)
        its input key and feature dim, ``num_classes`` and the head's type
        and row normalisation."""
        return dict(
            modalities=[dict(name=m, input_key=e.input_key,
                             feat_dim=e.feat_dim)
                        for m, e in self.encoders.items()],
            num_classes=self.num_classes,
            head=dict(type=type(self.head).__name__,
                      row_norm=getattr(self.head, 'row_norm', None)))

    def _check_checkpoint(self, state_dict, prefix, local_metadata, strict,
                          missing_keys, unexpected_keys, error_msgs) -> None:
        """Refuse checkpoints of another model, head or class count.

        mmengine loads non-strictly by default, which would silently keep
        random weights for every missing key; a CRMT run resumed from a JT
        checkpoint (or one with another number of classes) must fail.
        """
        own = {k: v.shape for k, v in self.state_dict().items()
               if k != self.IDENTITY_KEY}
        given = {k[len(prefix):]: v.shape for k, v in state_dict.items()
                 if k.startswith(prefix) and
                 k != prefix + self.IDENTITY_KEY}
        missing = sorted(k for k in own if k not in given and
                         k not in self.OPTIONAL_KEYS)
        unexpected = sorted(k for k in given if k not in own)
        mismatched = sorted(f'{k}: checkpoint {tuple(given[k])} vs model '
                            f'{tuple(own[k])}' for k in own
                            if k in given and given[k] != own[k])
        recorded = state_dict.get(prefix + self.IDENTITY_KEY)
        if missing or unexpected or mismatched:
            raise ValueError(
                'checkpoint does not match this CRMTRecognizer ('
                f'{self._head_difference(recorded, given)}). '
                f'Missing keys: {missing[:8]}; unexpected keys: '
                f'{unexpected[:8]}; shape mismatches: {mismatched[:8]}. Use a '
                'checkpoint of the same config, or initialise only the '
                "encoders with init_cfg=dict(type='Pretrained', ...).")
        if recorded is None:
            raise ValueError(
                'checkpoint has no model_identity record: it was written '
                'before crmt_mm recorded which modality each head block and '
                'each row of head.integration and tau belongs to (they are in '
                "the order of the training config's encoders, which is not "
                'stored), so loading it could silently swap modalities. '
                'Convert it once: python tools/convert_checkpoint.py CONFIG '
                'IN.pth OUT.pth --order <encoder names, comma-separated, in '
                'the order of the original config file the run was trained '
                "with; not the work-dir copy, which mmengine sorts>. This "
                f'model: {self.identity()}.')
        theirs = decode_identity(recorded)
        ours = decode_identity(encode_identity(self.identity()))
        if theirs != ours:
            diff = [f'{k}: checkpoint {theirs.get(k)!r} vs model '
                    f'{ours.get(k)!r}' for k in sorted(set(theirs) | set(ours))
                    if theirs.get(k) != ours.get(k)]
            raise ValueError(
                'checkpoint was written by another model (its '
                'model_identity differs): ' + '; '.join(diff) + '. Use the '
                'config of the run that wrote it.')

    def _head_difference(self, recorded: Optional[Tensor],
                         given: Mapping[str, object]) -> str:
        """Both head types when they differ, else what else may differ.

        The checkpoint's head type comes from its ``model_identity`` record;
        older checkpoints without it are told apart by the integration
        weights only ``CRMTHead`` has (JT's ``ConcatHead`` has none).
        """
        ours = type(self.head).__name__
        theirs = decode_identity(recorded).get('head', {}).get('type') \
            if recorded is not None else None
        if theirs is None and any(k.startswith('head.') for k in given):
            theirs = 'CRMTHead' if 'head.integration' in given else \
                'a head without integration weights (ConcatHead, JT)'
        if theirs is None or theirs == ours:
            return 'another number of classes or modalities?'
        return (f'the checkpoint has head {theirs}, this config has head '
                f'{ours}: a JT (ConcatHead) checkpoint cannot be loaded into '
                'a CRMT (CRMTHead) config or the reverse; use the config of '
                'the run that wrote the checkpoint')

    # ------------------------------------------------------------------
    # Data checks: the pipeline (before the first batch) and every batch.
    # ------------------------------------------------------------------
    def check_input_keys(self, keys: Iterable[str], source: str) -> None:
        """Refuse data whose input keys are not the encoders' input keys.

        Args:
            keys (Iterable[str]): the input keys the data provides.
            source (str): where they come from, for the message.

        Raises:
            ValueError: naming both key sets, the data preprocessor's
                entries, where the data's keys come from and the fix.
        """
        keys = sorted(keys)
        expected = {e.input_key: m for m, e in self.encoders.items()}
        if keys == sorted(expected):
            return
        entries = sorted(getattr(self.data_preprocessor, 'preprocessors',
                                 None) or {})
        extra = sorted(set(keys) - set(expected))
        lacking = sorted(set(expected) - set(keys))
        rename = (f" (here: rename the model's {lacking[0]!r} to "
                  f'{extra[0]!r} in the encoder and the preprocessors, or '
                  f'collect {lacking[0]!r} in the pipeline)'
                  if len(extra) == len(lacking) == 1 else '')
        raise ValueError(
            f'the data provides inputs {keys} but the model expects '
            f'{sorted(expected)} (modalities {expected}; '
            f'data_preprocessor.preprocessors has {entries}); the data\'s '
            f'keys come from {source}. Use the same names in '
            "PackActionInputs' collect_keys, the encoders' input_key and "
            f'the preprocessors keys{rename}.')

    def _check_batch_keys(self, module, args, kwargs) -> None:
        """Forward pre-hook of the data preprocessor: the batch's keys."""
        data = args[0] if args else kwargs.get('data')
        inputs = data.get('inputs') if isinstance(data, Mapping) else None
        if isinstance(inputs, Mapping):
            self.check_input_keys(
                inputs, "the batch (PackActionInputs' collect_keys)")

    def check_data_pipeline(self, dataset, where: str) -> None:
        """Check a dataset's pipeline against the model, before its first
        batch: the keys ``PackActionInputs`` collects (against the
        encoders' input keys and the preprocessors) and, for stock
        branches fed ``imgs``, the layout ``FormatShape`` gives (2-D
        recognizers take NCHW segments, 3-D ones NCTHW clips).

        Pipelines without these transforms are left to the per-batch
        checks.

        Args:
            dataset: a built dataset (wrappers are looked through).
            where (str): the dataloader's config key, for messages.

        Raises:
            ValueError: naming the keys or the branch and both layouts,
                and the fix.
        """
        transforms = pipeline_transforms(dataset)
        names = [type(t).__name__ for t in transforms]
        if 'PackActionInputs' in names:
            pack = transforms[names.index('PackActionInputs')]
            collected = getattr(pack, 'collect_keys', None)
            if collected is None:
                raise ValueError(
                    f'{where}: PackActionInputs has no collect_keys, so the '
                    'data is one tensor, but the model takes a dict keyed '
                    "by its encoders' input_key "
                    f'{sorted(e.input_key for e in self.encoders.values())}'
                    '; set collect_keys to those keys.')
            self.check_input_keys(
                collected, f"PackActionInputs(collect_keys=...) of the "
                f'{where} pipeline')
        if 'FormatShape' not in names:
            return
        fmt = getattr(transforms[names.index('FormatShape')], 'input_format',
                      None)
        for name, encoder in self.encoders.items():
            kind = getattr(encoder.backbone, 'kind', None)
            if encoder.input_key != 'imgs' or kind not in OTHER_KIND or \
                    fmt not in LAYOUTS_OF_FORMATS:
                continue
            if LAYOUTS_OF_FORMATS[fmt] != kind:
                raise ValueError(layout_mismatch(
                    f'encoders.{name}', encoder.backbone.recognizer_type,
                    kind, f"the {where} pipeline's FormatShape gives "
                    f"input_format='{fmt}' "
                    f'({LAYOUTS[LAYOUTS_OF_FORMATS[fmt]][1]})'))

    # ------------------------------------------------------------------
    # The contract used by hooks, loops, attacks and certification.
    # ------------------------------------------------------------------
    @property
    def bias(self) -> Tensor:
        return self.head.bias

    def integration_weights(self) -> Tensor:
        """Integration weights a [M, K] (ones for ``ConcatHead``)."""
        return self.head.integration_weights()

    def split_inputs(self, inputs: Mapping[str, Tensor],
                     data_samples: Optional[Sequence] = None
                     ) -> Dict[str, Tensor]:
        """Packed inputs keyed by input key -> modality-name dict, checked.

        Checks the input keys, every modality's shape and that all values
        are finite: a NaN or Inf input would turn every loss, attack and
        certificate of the batch into NaN far from its cause.

        Args:
            inputs (dict[str, Tensor]): ``{input_key: [B, N, ...]}`` from the
                data preprocessor.
            data_samples (list, optional): the batch's data samples; only
                used to name the offending clips (their ``frame_dir`` or
                ``filename`` meta). Defaults to None.
        """
        if not isinstance(inputs, Mapping):
            raise TypeError('CRMTRecognizer expects a dict of modality '
                            'tensors; use PackActionInputs(collect_keys=...) '
                            'and MultiModalDataPreprocessor.')
        self.check_input_keys(inputs, "the batch (PackActionInputs' "
                              'collect_keys)')
        out = {}
        for name, encoder in self.encoders.items():
            x = inputs[encoder.input_key]
            shape = encoder.input_shape
            if (shape is not None and tuple(x.shape[2:]) != shape) or \
                    x.ndim < 3:
                raise ValueError(
                    f'modality {name!r} ({encoder.input_key}): expected input '
                    f'[B, N, {", ".join(map(str, shape or ("...",)))}], got '
                    f'{list(x.shape)}. Check the pipeline (FormatShape, '
                    'resize) against the encoder input_shape.')
            self._check_finite_input(name, encoder.input_key, x,
                                     data_samples)
            out[name] = x
        return out

    @staticmethod
    def _check_finite_input(name: str, input_key: str, x: Tensor,
                            data_samples: Optional[Sequence]) -> None:
        finite = torch.isfinite(x).flatten(1).all(1)
        if bool(finite.all()):
            return
        bad = (~finite).nonzero().flatten().tolist()
        positions = bad[:5]
        metas = [data_samples[i].metainfo for i in positions] \
            if data_samples is not None else []
        clips = [next((meta[k] for k in CLIP_ID_KEYS if k in meta), None)
                 for meta in metas]
        where = f'clips {clips}' if clips and None not in clips else (
            "clip ids unknown: add 'frame_dir' to "
            'PackActionInputs(meta_keys=...) to see them here')
        raise ValueError(
            f'modality {name!r} ({input_key}) has NaN/Inf values in '
            f'{len(bad)} of {len(finite)} samples, at batch positions '
            f'{positions} ({where}). Fix the data: check those '
            'files with numpy.isfinite (e.g. a log of 0 in the audio '
            'features), re-extract them or drop them from the annotation '
            'list; a zero std in the data_preprocessor also gives Inf.')

    def extract_feats(self, x: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """``{m: [B, N, ...]}`` -> features ``{m: [B, D_m]}``."""
        return {m: self.encoders[m](x[m]) for m in self.modalities}

    def unimodal_logits(self, feats: Mapping[str, Tensor]
                        ) -> Dict[str, Tensor]:
        """Features -> uni-modal logits ``{m: [B, K]}``."""
        return self.head.unimodal_logits(feats)

    def fuse(self, logits: Mapping[str, Tensor],
             drop: Iterable[str] = ()) -> Tensor:
        """Uni-modal logits -> fused logits [B, K] without ``drop``."""
        return self.head.fuse(logits, drop)

    def fused_logits(self, x: Mapping[str, Tensor],
                     drop: Iterable[str] = ()) -> Tensor:
        """Modality inputs -> fused logits [B, K]; ``drop`` zeroes the
        features of those modalities."""
        return self.fuse(self.unimodal_logits(self.extract_feats(x)), drop)

    def modality_logits(self, x: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Modality inputs -> uni-modal logits (used for tau)."""
        return self.unimodal_logits(self.extract_feats(x))

    def input_spaces(self) -> Dict[str, Optional[InputSpace]]:
        """Raw-unit statistics and valid range of every modality's input."""
        return preprocessor_input_spaces(
            self.data_preprocessor,
            {m: e.input_key for m, e in self.encoders.items()},
            self.input_ranges)

    def certified_radius(self, x: Mapping[str, Tensor], labels: Tensor
                         ) -> Tensor:
        """Signed joint radius r(x) [B] with the stored ``tau``."""
        z = torch.stack(list(self.modality_logits(x).values()))
        return certified_radius(z, self.integration_weights(), self.bias,
                                self.tau, labels, self.competitor,
                                self.a_constraint != 'none')

    # ------------------------------------------------------------------
    # mmengine entry points.
    # ------------------------------------------------------------------
    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        """Dispatch to ``loss``, ``predict`` or ``_forward``."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._forward(inputs)
        raise RuntimeError(f'Invalid mode {mode!r}; use loss, predict or '
                           'tensor.')

    def _forward(self, inputs) -> Tensor:
        return self.fused_logits(self.split_inputs(inputs))

    def labels_of(self, data_samples) -> Tensor:
        """Stack ``gt_label`` of the data samples and check their range."""
        labels = torch.cat([ds.gt_label.view(-1)[:1] for ds in data_samples])
        bad = (labels < 0) | (labels >= self.num_classes)
        if bad.any():
            raise ValueError(
                f'labels out of range [0, {self.num_classes}): '
                f'{labels[bad].tolist()[:5]}. Check the annotation file and '
                "the head's num_classes.")
        return labels.to(self.tau.device)

    def batch_to_modalities(self, data_batch, training: bool = False,
                            preprocessed: bool = False):
        """A dataloader batch -> ``({modality: Tensor}, labels, samples)``.

        The one conversion used by the evaluation, tau estimation and
        the cached phase 2: the data preprocessor, :meth:`split_inputs`
        (checked shapes and finite values) and :meth:`labels_of`.

        Args:
            data_batch (dict): a collated batch, or with ``preprocessed``
                the data preprocessor's output for it.
            training (bool): preprocessing in training mode (augmenting
                preprocessors). Defaults to False.
            preprocessed (bool): ``data_batch`` is already preprocessed
                (the evaluation reuses the clean pass's preprocessing).
                Defaults to False.

        Returns:
            tuple: ``x`` ``{modality: [B, N, ...]}`` (normalised), labels
            LongTensor ``[B]`` and the data samples.
        """
        data = data_batch if preprocessed else \
            self.data_preprocessor(data_batch, training)
        samples = data['data_samples']
        return (self.split_inputs(data['inputs'], samples),
                self.labels_of(samples), samples)

    def predict(self, inputs, data_samples) -> List:
        """Fused and per-modality scores into ``pred_score`` (a dict)."""
        x = self.split_inputs(inputs, data_samples)
        z = self.modality_logits(x)
        scores = {'fused': self.fuse(z).softmax(-1)}
        scores.update({m: logit.softmax(-1) for m, logit in z.items()})
        for index, sample in enumerate(data_samples):
            sample.set_pred_score({k: v[index] for k, v in scores.items()})
        return data_samples

    def loss(self, inputs, data_samples) -> Dict[str, Tensor]:
        """Phase 1: the configured CRMT loss; phase 2: -mean r(x)."""
        x = self.split_inputs(inputs, data_samples)
        labels = self.labels_of(data_samples)
        if int(self.phase) == 2:
            return self._radius_loss(x, labels)
        losses = self._phase1_loss(x, labels)
        self._check_finite(losses)
        return losses

    def _phase1_loss(self, x: Dict[str, Tensor], labels: Tensor
                     ) -> Dict[str, Tensor]:
        labels_b, lam = None, 1.0
        if self.train_perturbation is not None and self.training:
            x, labels_b, lam = self.train_perturbation(self, x, labels)
        z = self.modality_logits(x)
        fused = self.fuse(z)
        losses = self.loss_module(
            torch.stack([z[m] for m in self.modalities]), fused, labels,
            labels_b, lam)
        losses['acc_fused'] = (fused.argmax(1) == labels).float().mean()
        for m, logit in z.items():
            losses[f'acc_{m}'] = (logit.argmax(1) == labels).float().mean()
        losses['phase'] = self.phase.float()
        return losses

    def _radius_loss(self, x: Dict[str, Tensor], labels: Tensor
                     ) -> Dict[str, Tensor]:
        with torch.no_grad():
            z = torch.stack(list(self.modality_logits(x).values()))
        return self.radius_loss(z, labels)

    def radius_loss(self, z: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """Step-2 objective ``-mean r(x)`` from uni-modal logits [M, B, K].

        ``z`` is a constant (encoders and classifier rows are frozen); only
        the integration weights receive gradients.
        """
        if not bool((self.tau > 0).any()):
            raise RuntimeError(
                'phase 2 needs the Lipschitz estimates tau, but the model '
                "buffer 'tau' is all zeros; let CRMTPhaseSwitchHook estimate "
                'it (do not set phase=2 by hand).')
        radius = certified_radius(z, self.integration_weights(),
                                  self.bias.detach(), self.tau, labels,
                                  self.competitor,
                                  self.a_constraint != 'none')
        # r = +-inf where every slope is 0 (a = 0 on both classes): the
        # sign of that pair no longer depends on the input, so a has no
        # gradient to give; such samples are left out of the mean. NaN is
        # kept so that it stops training.
        finite = ~torch.isinf(radius)
        objective = radius[finite].sum() / finite.sum().clamp_min(1)
        losses = dict(loss_radius=-objective,
                      radius_mean=radius.detach().clamp_min(0)[finite].mean(),
                      acc_fused=(radius > 0).float().mean(),
                      phase=self.phase.float())
        self._check_finite(losses)
        return losses

    def _check_finite(self, losses: Dict[str, Tensor]) -> None:
        bad = {k: float(v.detach()) for k, v in losses.items()
               if 'loss' in k and not bool(torch.isfinite(v).all())}
        if not bad:
            return
        hub = MessageHub.get_current_instance()
        iteration = hub.get_info('iter')
        last = hub.get_info('last_ckpt') or 'none saved yet'
        raise NonFiniteLossError(
            f'non-finite loss {bad} at iteration {iteration} (epoch '
            f'{hub.get_info("epoch")}, phase {int(self.phase)}); parameters '
            f'were not updated. Last good checkpoint: {last}. Fix: lower the '
            'learning rate or rho, check the inputs for NaN/Inf, then resume '
            'from that checkpoint with --resume.')

    # ------------------------------------------------------------------
    # Phase 2 support.
    # ------------------------------------------------------------------
    def integration_parameters(self) -> List[nn.Parameter]:
        """Parameters trained in phase 2 (the integration weights)."""
        return [p for n, p in self.head.named_parameters()
                if n == 'integration']

    def freeze_for_phase2(self) -> None:
        """Freeze everything but the integration weights."""
        if not self.integration_parameters():
            raise RuntimeError(
                f'{type(self.head).__name__} has no integration weights; '
                'phase 2 needs CRMTHead.')
        keep = set(map(id, self.integration_parameters()))
        for p in self.parameters():
            p.requires_grad_(id(p) in keep)

    def constrain_integration_(self) -> None:
        """Project a onto a >= 0 when ``a_constraint='clamp'``."""
        if self.a_constraint == 'clamp':
            with torch.no_grad():
                for p in self.integration_parameters():
                    p.clamp_(min=0)

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``; encoders stay in eval mode in phase 2."""
        super().train(mode)
        if int(self.phase) == 2:
            self.encoders.eval()
        return self
