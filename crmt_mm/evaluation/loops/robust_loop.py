"""Validation and test loops that add attacks and certificates to each batch.

mmengine's ``ValLoop``/``TestLoop`` run every batch under ``torch.no_grad``
and only call ``val_step``/``test_step``. The robust loops keep that clean
pass (so ``AccMetric`` and any other metric see the usual predictions) and,
on the same preprocessed batch, evaluate every configured perturbation and
the certified radii on the unwrapped model in eval mode. One record per
sample is attached to the data samples and consumed by
:class:`~crmt_mm.evaluation.metrics.RobustAccMetric` (``crmt.md`` §10,
``openmmlab.md`` §3.7).
"""
import contextlib
import math
import numbers
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence

import torch
from mmaction.registry import LOOPS
from mmengine.dist import all_reduce, is_main_process
from mmengine.runner import EpochBasedTrainLoop, Runner, TestLoop, ValLoop
from mmengine.runner.amp import autocast
from torch import Tensor, nn

from crmt_mm.attacks import (Perturbation, build_perturbations,
                             check_modalities)
from crmt_mm.certification import (certified_radius, estimate_tau,
                                   modality_radii)
from crmt_mm.engine.hooks.phase_switch_hook import unwrap
from crmt_mm.utils import reject_unknown_keys
from ..describe import describe_perturbation
from ..metrics.robust_acc_metric import RECORD_FIELD, RobustAccMetric
from ..report import write_report

#: Methods and attributes of the recognizer contract (``docs/design.md``).
MODEL_CONTRACT = ('modalities', 'split_inputs', 'fused_logits',
                  'modality_logits', 'unimodal_logits', 'labels_of',
                  'input_spaces', 'integration_weights', 'bias', 'tau')
TAU_SOURCES = ('model', 'estimate')
CERTIFY_KEYS = ('radii', 'tau_source', 'tau_data', 'tau_max_batches')
CERTIFICATE_LABEL = (
    'empirical: tau is the largest input-gradient norm of each uni-modal '
    'logit over finitely many samples, a lower estimate of the Lipschitz '
    'constant, so radii and certified accuracies are estimates, not '
    'guarantees (crmt.md §7)')


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the block; every submodule's flag restored afterwards.

    Restoring the exact per-module flags (rather than calling
    ``model.train(previous)``) keeps deliberately mixed states, e.g. the
    phase-2 recognizer whose encoders stay in eval mode during training.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


@contextlib.contextmanager
def capture_features(model: nn.Module, enabled: bool = True):
    """Keep every modality encoder's output ``{m: [B, D_m]}`` while the
    block runs (forward hooks, removed afterwards).

    The certified radius needs the uni-modal logits of the clean batch,
    which the clean ``predict`` forward already computes; capturing its
    features saves a second encoder pass (only the linear head is re-run).
    Yields an empty dict when disabled or the model has no ``encoders``.
    """
    feats: Dict[str, Tensor] = {}
    encoders = getattr(model, 'encoders', {}) if enabled else {}
    handles = [
        encoder.register_forward_hook(
            lambda module, args, out, name=name: feats.__setitem__(name, out))
        for name, encoder in encoders.items()
    ]
    try:
        yield feats
    finally:
        for handle in handles:
            handle.remove()


def _check_certify(certify: Optional[dict],
                   descriptions: List[dict]) -> Optional[dict]:
    """Validate ``certify`` and fill its defaults (None = off).

    The default radii are 0 plus every attack budget in the normalised space
    (``descriptions`` of the perturbations), so CA(R) can be read next to
    the attack accuracy at eps = R.
    """
    if certify is None:
        return None
    if not isinstance(certify, dict):
        raise ValueError(f'certify must be a dict or None, got {certify!r}')
    unknown = sorted(set(certify) - set(CERTIFY_KEYS))
    if unknown:
        raise ValueError(f'certify: unknown keys {unknown}; accepted: '
                         f'{list(CERTIFY_KEYS)}')
    cfg = dict(radii=None, tau_source='model', tau_data='train',
               tau_max_batches=None)
    cfg.update(certify)
    radii = cfg['radii']
    if radii is None:
        radii = [0.0] + [d['budget'] for d in descriptions
                         if d['kind'] in ('fgm', 'pgd', 'worst') and
                         d['unit'] == 'normalized' and
                         d['budget'] is not None]
    else:
        if not isinstance(radii, (list, tuple)) or not radii:
            raise ValueError('certify.radii must be a non-empty list of '
                             f'radii >= 0, got {radii!r}')
        for r in radii:
            if isinstance(r, bool) or not isinstance(r, numbers.Real) \
                    or not math.isfinite(r) or r < 0:
                raise ValueError(f'certify.radii: {r!r} is not a finite '
                                 'number >= 0')
    cfg['radii'] = sorted({float(r) for r in radii})
    if cfg['tau_source'] not in TAU_SOURCES:
        raise ValueError(f'certify.tau_source must be one of {TAU_SOURCES}, '
                         f'got {cfg["tau_source"]!r}')
    if cfg['tau_data'] not in ('train', 'self') and \
            not isinstance(cfg['tau_data'], dict):
        raise ValueError("certify.tau_data must be 'train', 'self' or a "
                         f'dataloader config dict, got {cfg["tau_data"]!r}')
    limit = cfg['tau_max_batches']
    if limit is not None and (isinstance(limit, bool) or
                              not isinstance(limit, int) or limit < 1):
        raise ValueError('certify.tau_max_batches must be None or an int '
                         f'>= 1, got {limit!r}')
    return cfg


class RobustLoopMixin:
    """Robust evaluation shared by :class:`RobustValLoop` and
    :class:`RobustTestLoop`; they differ only in ``_stage`` and when the
    robust part is due.

    Per batch (when the robust part is due): preprocess once; the clean
    ``predict`` forward (its data samples go to every metric, its fused
    score gives the clean prediction of the robust record, its encoder
    features the certified radii, so only the linear head is re-run); then
    every perturbation's ``predict(model.fused_logits, x, y, spaces)``.
    Perturbations enable gradients themselves (w.r.t. inputs only) and are
    called under ``no_grad``, so the final forward of each attack builds no
    graph: an L2 PGD of k steps costs k forward+backward passes plus one
    forward, on top of the one clean forward.
    """

    _stage: str

    def _init_robust(self, perturbations, certify, report_dir,
                     log_interval) -> None:
        model = unwrap(self.runner.model)
        missing = [k for k in MODEL_CONTRACT if not hasattr(model, k)]
        if missing:
            raise TypeError(
                f'{type(self).__name__} needs the crmt_mm recognizer '
                f'contract (docs/design.md); {type(model).__name__} lacks '
                f'{missing}')
        if isinstance(log_interval, bool) or not isinstance(
                log_interval, int) or log_interval < 1:
            raise ValueError(
                f'log_interval must be an int >= 1, got {log_interval!r}')
        self.perturbations = build_perturbations(list(perturbations))
        check_modalities(self.perturbations, model.modalities)
        descriptions = [describe_perturbation(p) for p in self.perturbations]
        self.certify = _check_certify(certify, descriptions)
        if not self.perturbations and self.certify is None:
            raise ValueError(
                f'{type(self).__name__} has nothing to evaluate: give '
                '`perturbations` and/or `certify` (or use the plain '
                f'{self._stage.capitalize()}Loop)')
        if self.certify is not None and self.certify['tau_data'] == 'train' \
                and self.certify['tau_source'] == 'estimate' \
                and self.runner.cfg.get('train_dataloader') is None:
            raise ValueError(
                "certify.tau_data='train' needs `train_dataloader` in the "
                "config; use tau_data='self' (this loop's data) or a "
                'dataloader config dict')
        self.report_dir = report_dir
        self.log_interval = log_interval
        self.metric = self._robust_metric()
        self.metric.bind(descriptions, model.modalities,
                         self.certify['radii'] if self.certify else None)
        self._robust_now = False
        self._tau_loader = None
        self._tau_skip_logged = False

    def _robust_metric(self) -> RobustAccMetric:
        """The evaluator's :class:`RobustAccMetric`, added if absent."""
        found = [m for m in self.evaluator.metrics
                 if isinstance(m, RobustAccMetric)]
        if len(found) > 1:
            raise ValueError(f'{self._stage}_evaluator holds {len(found)} '
                             'RobustAccMetric; keep one')
        if found:
            return found[0]
        metric = RobustAccMetric()
        metric.dataset_meta = self.evaluator.dataset_meta
        self.evaluator.metrics.append(metric)
        self.runner.logger.info(
            f'{self._stage}_evaluator has no RobustAccMetric: added one with '
            'default arguments')
        return metric

    # ---- one evaluation --------------------------------------------------

    def _robust_due(self) -> bool:
        return True

    def _progress_tag(self) -> Optional[str]:
        """Training progress at this evaluation (``'epoch_3'``), if any."""
        return None

    def _report_subdir(self) -> str:
        return ''

    def run(self) -> dict:
        """Clean evaluation plus, when due, the robust part and the report."""
        self._robust_now = self._robust_due()
        if not self._robust_now:
            self.metric.begin(None)
            return super().run()
        self._begin_robust()
        metrics = super().run()
        self._end_robust()
        return metrics

    def _begin_robust(self) -> None:
        model = unwrap(self.runner.model)
        self._spaces = model.input_spaces()
        self._tau, certification = self._prepare_tau(model)
        self._correct = {name: 0 for name in
                         ['clean'] + [p.name for p in self.perturbations]}
        self._seconds = {name: 0.0 for name in self._correct}
        self._seconds['certify'] = 0.0
        self._seen = 0
        self._failed: Dict[str, str] = {}
        names = ', '.join(p.name for p in self.perturbations) or 'none'
        self.runner.logger.info(
            f'robust {self._stage}: {len(self.dataloader)} batches x '
            f'{len(self.perturbations)} perturbations ({names}); '
            f'certification: {certification["status"]}')
        self.metric.begin(dict(
            stage=self._stage, certification=certification,
            clamp_ranges=self._clamp_ranges(),
            model=type(model).__name__,
            head=type(getattr(model, 'head', None)).__name__,
            checkpoint=self.runner.cfg.get('load_from'),
            config=self.runner.cfg.filename,
            work_dir=self.runner.work_dir,
            world_size=self.runner.world_size,
            progress=self._progress_tag()))

    def _end_robust(self) -> None:
        if self._failed:
            self.runner.logger.warning(
                f'robust {self._stage}: perturbations failed and are '
                f'reported as failed: {sorted(self._failed)}')
        if not is_main_process() or self.metric.report is None:
            return
        report = self.metric.report
        report['run']['seconds_per_batch_rank0'] = {
            k: v / max(len(self.dataloader), 1)
            for k, v in self._seconds.items()}
        out_dir = osp.join(self.report_dir or self.runner.work_dir,
                           self._report_subdir())
        paths = write_report(report, out_dir)
        self.runner.logger.info(
            f'robustness report: {", ".join(paths.values())}')

    def _clamp_ranges(self) -> Dict[str, Optional[List[float]]]:
        """Valid raw range each modality is clamped to (None: never)."""
        return {m: None if space is None or not space.bounded else
                [None if v is None else v.tolist()
                 for v in (space.lo, space.hi)]
                for m, space in self._spaces.items()}

    # ---- tau -------------------------------------------------------------

    def _prepare_tau(self, model):
        """The tau used for certification and its provenance."""
        if self.certify is None:
            return None, dict(status='off')
        if self.certify['tau_source'] == 'model':
            tau = model.tau.detach().clone()
            if not bool((tau > 0).any()):
                if not self._tau_skip_logged:
                    self.runner.logger.warning(
                        f'certification skipped: {type(model).__name__} has '
                        "no Lipschitz estimates (its 'tau' buffer is all "
                        'zeros, e.g. a JT model or a phase-1 checkpoint); '
                        "set certify.tau_source='estimate' to estimate tau "
                        'at evaluation time')
                    self._tau_skip_logged = True
                return None, dict(
                    status='skipped', reason="the model's tau buffer is all "
                    'zeros (never estimated)')
            provenance = dict(
                source='model', note="the model's tau buffer, normally "
                'written by CRMTPhaseSwitchHook at the switch to phase 2 '
                '(training data, eval mode, input gradients, max over '
                'ranks)')
        else:
            tau, provenance = self._estimate_tau(model)
        return tau, dict(status='on', label=CERTIFICATE_LABEL,
                         radii=self.certify['radii'], competitor='min',
                         weights='|a| (valid for any sign of a)',
                         tau=dict(provenance, values=tau.tolist(),
                                  modalities=list(model.modalities)))

    def _estimate_tau(self, model):
        spec = self.certify['tau_data']
        if spec == 'self':
            loader, data = self.dataloader, f'the {self._stage} dataloader'
        else:
            if self._tau_loader is None:
                cfg = self.runner.cfg.train_dataloader if spec == 'train' \
                    else spec
                self._tau_loader = Runner.build_dataloader(
                    cfg, seed=self.runner.seed)
            loader = self._tau_loader
            data = 'train_dataloader' if spec == 'train' else \
                'certify.tau_data'
        start = time.perf_counter()
        self.runner.logger.info(
            f'certification: estimating tau on {data} (max_batches='
            f'{self.certify["tau_max_batches"]}, '
            "certify.tau_source='estimate')")
        with eval_mode(model):
            batches = (model.split_inputs(
                model.data_preprocessor(batch, False)['inputs'])
                for batch in loader)
            result = estimate_tau(model.modality_logits, batches,
                                  model.modalities, model.num_classes,
                                  max_batches=self.certify['tau_max_batches'])
        tau = result['tau'].to(model.tau.device)
        # Each rank saw its shard: the global max, and the total count.
        all_reduce(tau, op='max')
        count = torch.tensor(float(result['num_samples']))
        all_reduce(count, op='sum')
        seconds = time.perf_counter() - start
        self.runner.logger.info(
            f'certification: tau ESTIMATED AT EVALUATION TIME on '
            f'{int(count)} samples in {seconds:.1f}s')
        return tau, dict(
            source='estimated at evaluation time', data=data,
            num_samples=int(count),
            max_batches=self.certify['tau_max_batches'],
            mode='eval (BatchNorm running statistics), input gradients, '
            'max over samples and ranks', seconds=seconds)

    # ---- one batch -------------------------------------------------------

    @torch.no_grad()
    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        """Clean step, plus perturbations and certificates when due."""
        if not self._robust_now:
            return super().run_iter(idx, data_batch)
        self.runner.call_hook(f'before_{self._stage}_iter', batch_idx=idx,
                              data_batch=data_batch)
        model = unwrap(self.runner.model)
        with eval_mode(model):
            outputs = self._robust_step(model, data_batch)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(f'after_{self._stage}_iter', batch_idx=idx,
                              data_batch=data_batch, outputs=outputs)
        if (idx + 1) % self.log_interval == 0 or \
                idx + 1 == len(self.dataloader):
            self._log_progress(idx)

    def _robust_step(self, model, data_batch) -> list:
        start = time.perf_counter()
        # One preprocessing for the clean pass and every perturbation; the
        # clean pass is what ``test_step`` would run (preprocess + predict).
        data = model.data_preprocessor(data_batch, False)
        with autocast(enabled=self.fp16), capture_features(
                model, enabled=self._tau is not None) as feats:
            outputs = model(**data, mode='predict')
        x = model.split_inputs(data['inputs'])
        y = model.labels_of(outputs)
        preds = {'clean': torch.stack([_fused_score(s) for s in outputs])
                 .argmax(1)}
        self._seconds['clean'] += time.perf_counter() - start
        for p in self.perturbations:
            preds[p.name] = self._predict(p, model, x, y)
        radii = {} if self._tau is None else self._radii(model, x, y, feats)
        self._attach_records(outputs, y.tolist(), {
            k: None if v is None else v.tolist() for k, v in preds.items()
        }, radii)
        return outputs

    def _attach_records(self, outputs, labels: List[int],
                        preds: Dict[str, Optional[List[int]]],
                        radii: Dict[str, list]) -> None:
        """One plain-Python record per sample, for RobustAccMetric."""
        failed = dict(self._failed)
        for i, sample in enumerate(outputs):
            record = dict(label=labels[i],
                          preds={k: None if v is None else v[i]
                                 for k, v in preds.items()},
                          **{k: v[i] for k, v in radii.items()})
            if failed:
                record['failed'] = failed
            sample.set_field(record, RECORD_FIELD)
        self._seen += len(labels)
        for name, pred in preds.items():
            if pred is not None:
                self._correct[name] += sum(
                    int(p == t) for p, t in zip(pred, labels))

    def _predict(self, p: Perturbation, model, x, y) -> Optional[Tensor]:
        """Predicted classes [B] under ``p``; None once ``p`` has failed.

        A failing perturbation is logged with its traceback, skipped for
        the rest of the evaluation (a partial accuracy would be misleading)
        and reported as failed; the others go on.
        """
        if p.name in self._failed:
            return None
        start = time.perf_counter()
        try:
            pred = p.predict(model.fused_logits, x, y, self._spaces).argmax(1)
        except Exception as err:  # noqa: BLE001 (reported, not swallowed)
            self._failed[p.name] = f'{type(err).__name__}: {err}'
            self.runner.logger.error(
                f'robust {self._stage}: perturbation {p.name!r} failed and '
                'is skipped from here on (reported as failed); the other '
                'perturbations continue', exc_info=True)
            return None
        finally:
            self._seconds[p.name] += time.perf_counter() - start
        return pred

    def _radii(self, model, x, y, feats) -> Dict[str, list]:
        """Joint radius r(x) and per-modality r^(m)(x), with |a|, from the
        clean pass's features (a fresh forward if they were not captured)."""
        start = time.perf_counter()
        logits = model.unimodal_logits(feats) \
            if set(feats) == set(model.modalities) \
            else model.modality_logits(x)
        z = torch.stack([logits[m] for m in model.modalities])
        a, b = model.integration_weights(), model.bias
        joint = certified_radius(z, a, b, self._tau, y, 'min', True)
        per_modality = modality_radii(z, a, b, self._tau, y, 'min')
        self._seconds['certify'] += time.perf_counter() - start
        return dict(radius=joint.tolist(), modality_radii=[
            dict(zip(model.modalities, values))
            for values in per_modality.T.tolist()])

    def _log_progress(self, idx: int) -> None:
        batches = idx + 1
        parts = []
        for name, correct in self._correct.items():
            if name in self._failed:
                parts.append(f'{name} FAILED')
                continue
            parts.append(f'{name} {correct / max(self._seen, 1):.3f} '
                         f'({self._seconds[name] / batches:.2f}s/batch)')
        if self._tau is not None:
            parts.append(
                f'certify {self._seconds["certify"] / batches:.2f}s/batch')
        self.runner.logger.info(
            f'robust {self._stage} [{batches}/{len(self.dataloader)}] '
            f'accuracy on this rank so far: ' + ' | '.join(parts))


def _fused_score(sample) -> Tensor:
    """Fused class scores [K] of one predicted data sample."""
    score = sample.pred_score
    return score['fused'] if isinstance(score, dict) else score


@LOOPS.register_module()
@reject_unknown_keys
class RobustTestLoop(RobustLoopMixin, TestLoop):
    """Test loop adding attacks, missing-modality, noise and certificates.

    Every batch goes through the usual clean ``predict`` (for ``AccMetric``
    and the other metrics), then through each perturbation and the
    certified-radius computation on the unwrapped model in eval mode; one
    record per sample goes to :class:`RobustAccMetric` (added to the
    evaluator if absent). At the end ``robustness.json``, ``robustness.md``
    and ``robustness.png`` are written to ``report_dir`` (default: the work
    dir) by the main process.

    Note:
        * Budgets are per-sample L2 norms in the normalised input space
          (after the data preprocessor) unless a perturbation sets
          ``eps_unit='raw'``; see :mod:`crmt_mm.attacks` for every type.
        * Certificates use the model's ``tau`` buffer, or with
          ``tau_source='estimate'`` a tau estimated here (labelled as such
          in the report) on the train dataloader. Without either
          (all-zero ``tau``, e.g. JT) certification is skipped with one
          warning. Radii use |a| and the minimum over competitor classes.
          They are empirical (tau is a lower estimate).
        * A perturbation that raises is logged, skipped from then on and
          reported as failed; the others are unaffected.
        * Parameters, buffers and module modes are left exactly as found.

    Args:
        runner (Runner): the runner.
        dataloader (DataLoader | dict): test dataloader.
        evaluator (Evaluator | dict | list): test evaluator.
        perturbations (Sequence[dict]): perturbation configs for
            :func:`crmt_mm.attacks.build_perturbations` (``type`` is a class
            of :mod:`crmt_mm.attacks`; list-valued ``eps``/``sigma`` expand
            into curves). Defaults to ().
        certify (dict, optional): None (off) or a dict with ``radii``
            (list of R >= 0; default 0 plus every normalised attack
            budget), ``tau_source`` (``'model'`` or ``'estimate'``; default
            ``'model'``), ``tau_data`` (``'train'``, ``'self'`` = this
            loop's data, or a dataloader config; default ``'train'``) and
            ``tau_max_batches`` (int; default None = all). Defaults to None.
        report_dir (str, optional): where the report goes. Defaults to None
            (the work dir).
        log_interval (int): a progress line every this many batches.
            Defaults to 10.
        fp16 (bool): autocast the clean pass. Defaults to False.

    Example:
        >>> test_cfg = dict(
        ...     type='RobustTestLoop',
        ...     perturbations=[
        ...         dict(type='UniModalPGD', modality='audio',
        ...              eps=[0.5, 1.0]),
        ...         dict(type='MissingModality', modality='visual')],
        ...     certify=dict(radii=[0, 0.5, 1.0], tau_source='model'))
        >>> test_evaluator = [dict(type='AccMetric'),
        ...                   dict(type='RobustAccMetric')]
    """

    _stage = 'test'

    def __init__(self, runner, dataloader, evaluator,
                 perturbations: Sequence[dict] = (),
                 certify: Optional[dict] = None,
                 report_dir: Optional[str] = None, log_interval: int = 10,
                 fp16: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16=fp16)
        self._init_robust(perturbations, certify, report_dir, log_interval)


@LOOPS.register_module()
@reject_unknown_keys
class RobustValLoop(RobustLoopMixin, ValLoop):
    """Validation loop with the robust part of :class:`RobustTestLoop`.

    Clean metrics are computed at every validation; the robust part (and
    the report, written to ``<report_dir>/val_epoch_<E>`` or
    ``val_iter_<I>``) runs when the training progress (epochs for an
    epoch-based, iterations for an iteration-based train loop) is a
    multiple of ``interval``, and at the last validation of training, so
    a resumed run follows the same schedule. Outside training
    (``runner.val()``) it always runs. The robust metric keys (and thus
    ``save_best`` on them) exist only at robust validations.

    Args:
        runner (Runner): the runner.
        dataloader (DataLoader | dict): validation dataloader.
        evaluator (Evaluator | dict | list): validation evaluator.
        perturbations (Sequence[dict]): as in :class:`RobustTestLoop`.
            Defaults to ().
        certify (dict, optional): as in :class:`RobustTestLoop`; with
            ``tau_source='estimate'`` tau is re-estimated at every robust
            validation (the model changes). Defaults to None.
        interval (int): robust part every this many epochs (iterations).
            Defaults to 1.
        report_dir (str, optional): Defaults to None (the work dir).
        log_interval (int): progress line every this many batches.
            Defaults to 10.
        fp16 (bool): autocast the clean pass. Defaults to False.

    Example:
        >>> val_cfg = dict(
        ...     type='RobustValLoop', interval=5,
        ...     perturbations=[dict(type='UniModalPGD', modality='audio',
        ...                         eps=0.5)])
    """

    _stage = 'val'

    def __init__(self, runner, dataloader, evaluator,
                 perturbations: Sequence[dict] = (),
                 certify: Optional[dict] = None, interval: int = 1,
                 report_dir: Optional[str] = None, log_interval: int = 10,
                 fp16: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16=fp16)
        if isinstance(interval, bool) or not isinstance(interval, int) \
                or interval < 1:
            raise ValueError(
                f'interval must be an int >= 1, got {interval!r}')
        self.interval = interval
        self._init_robust(perturbations, certify, report_dir, log_interval)

    def _training_progress(self):
        """(progress, last, unit) inside training, else None.

        ``max_iters`` reaches the message hub only in ``before_train``
        (RuntimeInfoHook), so its presence tells a validation inside
        training from a standalone ``runner.val()``.
        """
        if self.runner.message_hub.get_info('max_iters') is None:
            return None
        if isinstance(self.runner.train_loop, EpochBasedTrainLoop):
            return self.runner.epoch, self.runner.max_epochs, 'epoch'
        return self.runner.iter, self.runner.max_iters, 'iter'

    def _robust_due(self) -> bool:
        progress = self._training_progress()
        if progress is None:
            return True
        done, last, _ = progress
        return done % self.interval == 0 or done >= last

    def _progress_tag(self) -> Optional[str]:
        progress = self._training_progress()
        if progress is None:
            return None
        done, _, unit = progress
        return f'{unit}_{done}'

    def _report_subdir(self) -> str:
        tag = self._progress_tag()
        return 'val' if tag is None else f'val_{tag}'
