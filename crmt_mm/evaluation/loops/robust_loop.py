"""Validation and test loops that add attacks and certificates to each batch.

mmengine's ``ValLoop``/``TestLoop`` run every batch under ``torch.no_grad``
and only call ``val_step``/``test_step``. The robust loops keep that clean
pass (so ``AccMetric`` and any other metric see the usual predictions) and
hand each batch to a :class:`~crmt_mm.evaluation.RobustEvaluator`, which
adds every configured perturbation and the certified radii on the
unwrapped model in eval mode. The loops only decide when the robust part
runs, feed the evaluator, and pass its records and protocol to the report
builder (``docs/evaluation.md``).
"""
import os.path as osp
from typing import Optional, Sequence

from mmaction.registry import LOOPS
from mmengine.dist import is_main_process
from mmengine.runner import EpochBasedTrainLoop, TestLoop, ValLoop

from crmt_mm.engine.hooks.phase_switch_hook import unwrap
from crmt_mm.models.recognizers.crmt_recognizer import check_loader
from crmt_mm.utils import reject_unknown_keys
from ..metrics.robust_acc_metric import RobustAccMetric
from ..report import build_report, write_report
from ..robust_evaluator import (RobustEvaluator, check_tau_data,
                                resolve_tau_loader)


class RobustLoopMixin:
    """Robust evaluation shared by :class:`RobustValLoop` and
    :class:`RobustTestLoop`; they differ only in ``_stage`` and when the
    robust part is due."""

    _stage: str

    def _init_robust(self, perturbations, certify, report_dir,
                     log_interval, subset=None, trust='auto',
                     smoothing=()) -> None:
        check_loader(self.runner, self.dataloader,
                     f'{self._stage}_dataloader')
        self.robust = RobustEvaluator(
            unwrap(self.runner.model), perturbations, certify,
            stage=self._stage, fp16=self.fp16, log_interval=log_interval,
            logger=self.runner.logger,
            # The config key first: messages then say where to look.
            who=f'{self._stage}_cfg ({type(self).__name__})',
            subset=subset, trust=trust, smoothing=smoothing)
        check_tau_data(self.runner, self.robust.certify)
        self.report_dir = report_dir
        self.metric = self._robust_metric()
        self.robust.bind(self.metric)
        self._robust_now = False
        self._tau_loader = None

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

    # ---- when --------------------------------------------------------------

    def _robust_due(self) -> bool:
        return True

    def _progress_tag(self) -> Optional[str]:
        """Training progress at this evaluation (``'epoch_3'``), if any."""
        return None

    def _report_subdir(self) -> str:
        return ''

    # ---- one evaluation ----------------------------------------------------

    def run(self) -> dict:
        """Clean evaluation plus, when due, the robust part and the report."""
        self._robust_now = self._robust_due()
        if not self._robust_now:
            self.metric.begin(False)
            return super().run()
        tau_loader, tau_data = None, 'certify.tau_data'
        if self.robust.needs_tau_data:
            tau_loader, tau_data = self._tau_data()
        runner = self.runner
        self.robust.begin(len(self.dataloader), tau_loader, tau_data,
                          run_info=dict(checkpoint=runner.cfg.get('load_from'),
                                        config=runner.cfg.filename,
                                        work_dir=runner.work_dir,
                                        world_size=runner.world_size,
                                        seed=runner.seed),
                          num_samples=len(self.dataloader.dataset))
        self.metric.begin(True, self.robust.certified)
        metrics = super().run()
        protocol = self.robust.end()
        if is_main_process() and self.metric.records is not None:
            report = build_report(self.metric.records,
                                  self.metric.perturbations, protocol,
                                  progress=self._progress_tag(),
                                  groups=self.metric.groups,
                                  prefix=self.metric.prefix)
            out_dir = osp.join(self.report_dir or runner.work_dir,
                               self._report_subdir())
            paths = write_report(report, out_dir)
            runner.logger.info(
                f'robustness report: {", ".join(paths.values())}')
        return metrics

    def _tau_data(self):
        """The tau loader (the train loader is built once and kept)."""
        if self.robust.certify['tau_data'] == 'self':
            return resolve_tau_loader(self.runner, self.robust.certify,
                                      self.dataloader, self._stage)
        if self._tau_loader is None:
            self._tau_loader = resolve_tau_loader(
                self.runner, self.robust.certify, self.dataloader,
                self._stage)
        return self._tau_loader

    def run_iter(self, idx, data_batch: Sequence[dict]) -> None:
        """Clean step, plus perturbations and certificates when due."""
        if not self._robust_now:
            return super().run_iter(idx, data_batch)
        self.runner.call_hook(f'before_{self._stage}_iter', batch_idx=idx,
                              data_batch=data_batch)
        outputs = self.robust.process(data_batch)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        self.runner.call_hook(f'after_{self._stage}_iter', batch_idx=idx,
                              data_batch=data_batch, outputs=outputs)


@LOOPS.register_module()
@reject_unknown_keys
class RobustTestLoop(RobustLoopMixin, TestLoop):
    """Test loop adding attacks, missing-modality, noise and certificates.

    Every batch goes through the usual clean ``predict`` (for ``AccMetric``
    and the other metrics), then through each perturbation and the
    certified-radius computation (:class:`RobustEvaluator`) on the
    unwrapped model in eval mode; one record per sample goes to
    :class:`RobustAccMetric` (added to the evaluator if absent). At the end
    the main process writes ``robustness.json``, ``robustness.md`` and
    ``robustness.png`` to ``report_dir`` (default: the work dir) with
    :func:`~crmt_mm.evaluation.report.build_report`.

    The model needs only the attack contract of
    :mod:`crmt_mm.evaluation.contract` (``modalities``,
    ``batch_to_modalities``, ``fused_logits``, optional ``input_spaces``);
    certification also needs ``modality_logits``, ``integration_weights``,
    ``bias``, ``num_classes`` and (``tau_source='model'``) ``tau``.

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
        smoothing (Sequence[dict]): sound randomized-smoothing
            certificates: each entry a ``GaussianSmoothingCertifier`` config
            (``modality``, ``sigma``, ``n0``, ``n``, ``alpha``,
            ``batch_size``, ``seed``) plus ``subset`` (None = every sample,
            or ``dict(size=N, seed=S)``: N dataset indices drawn with seed
            S), ``radii`` (R of the table; default 0 plus the covered
            attack budgets) and ``check_attacks`` (PREDICT of the smoothed
            classifier at the covered attacks' adversarial examples inside
            the certified radius; default True). Needs ``'sample_idx'`` in
            the test pipeline's ``PackActionInputs`` meta_keys
            (``docs/certification.md``). Defaults to () (off).
        report_dir (str, optional): where the report goes. Defaults to None
            (the work dir).
        log_interval (int, optional): a progress line (with ETA) every this
            many batches. Defaults to None (about ten lines per pass, and
            at least one every 30 s).
        fp16 (bool): autocast the clean pass. Defaults to False.
        subset (dict, optional): ``dict(size=N, seed=S)``: the expensive
            ensembles (``MultiModalAutoAttack``, version not
            ``'reference'``) and the large-budget trust attacks run on a
            seeded subsample of about N clips (the report says so and
            gives every perturbation's sample count). Defaults to None.
        trust (bool | dict | str): trust figures and checks
            (:mod:`crmt_mm.evaluation.trust`); ``'auto'`` = on when an
            ensemble is evaluated. Defaults to ``'auto'``.

    Example:
        >>> test_cfg = dict(
        ...     type='RobustTestLoop',
        ...     perturbations=[
        ...         dict(type='UniModalPGD', modality='audio',
        ...              eps=[0.5, 1.0]),
        ...         dict(type='MissingModality', modality='visual')],
        ...     certify=dict(radii=[0, 0.5, 1.0], tau_source='model'),
        ...     smoothing=[dict(type='GaussianSmoothingCertifier',
        ...                     modality='audio', sigma=0.25, n0=64, n=512,
        ...                     alpha=0.001, subset=dict(size=64, seed=0))])
        >>> test_evaluator = [dict(type='AccMetric'),
        ...                   dict(type='RobustAccMetric')]
    """

    _stage = 'test'

    def __init__(self, runner, dataloader, evaluator,
                 perturbations: Sequence[dict] = (),
                 certify: Optional[dict] = None,
                 report_dir: Optional[str] = None,
                 log_interval: Optional[int] = None,
                 fp16: bool = False, subset: Optional[dict] = None,
                 trust='auto', smoothing: Sequence[dict] = ()) -> None:
        super().__init__(runner, dataloader, evaluator, fp16=fp16)
        self._init_robust(perturbations, certify, report_dir, log_interval,
                          subset, trust, smoothing)


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
        smoothing (Sequence[dict]): as in :class:`RobustTestLoop`.
            Defaults to ().
        report_dir (str, optional): Defaults to None (the work dir).
        log_interval (int, optional): as in :class:`RobustTestLoop`.
            Defaults to None.
        fp16 (bool): autocast the clean pass. Defaults to False.
        subset (dict, optional): as in :class:`RobustTestLoop`.
            Defaults to None.
        trust (bool | dict | str): as in :class:`RobustTestLoop`.
            Defaults to ``'auto'``.

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
                 report_dir: Optional[str] = None,
                 log_interval: Optional[int] = None,
                 fp16: bool = False, subset: Optional[dict] = None,
                 trust='auto', smoothing: Sequence[dict] = ()) -> None:
        super().__init__(runner, dataloader, evaluator, fp16=fp16)
        if isinstance(interval, bool) or not isinstance(interval, int) \
                or interval < 1:
            raise ValueError(
                f'interval must be an int >= 1, got {interval!r}')
        self.interval = interval
        self._init_robust(perturbations, certify, report_dir, log_interval,
                          subset, trust, smoothing)

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
