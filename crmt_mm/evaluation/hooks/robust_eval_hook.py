"""Robust evaluation during training from ``custom_hooks`` alone.

:class:`RobustEvalHook` drives the same :class:`RobustEvaluator` as the
robust loops, so a config gains attacks, missing-modality, noise and
(optionally) certified accuracy without touching ``val_cfg``/``test_cfg``.
"""
import contextlib
import os
import os.path as osp
import random
import re
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmaction.registry import HOOKS
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import EpochBasedTrainLoop, Runner
from torch.utils.data import DataLoader

from crmt_mm.attacks import build_perturbations
from crmt_mm.engine.hooks.phase_switch_hook import unwrap
from crmt_mm.models.recognizers.crmt_recognizer import check_loader
from crmt_mm.utils import reject_unknown_keys
from ..certify_config import check_certify
from ..metrics.robust_acc_metric import RobustAccMetric
from ..report import build_report, write_report
from ..robust_evaluator import (RobustEvaluator, check_tau_data,
                                resolve_tau_loader)

#: Checkpoint key of the hook's record of evaluated epochs (iterations).
CHECKPOINT_KEY = 'crmt_robust_eval'
#: File whose presence marks an evaluated progress point (old checkpoints).
REPORT_FILE = 'robustness.json'


@contextlib.contextmanager
def training_rng_preserved():
    """Leave the random streams of training as they were.

    Iterating a dataloader draws its base seed from torch's global
    generator, and a pipeline may draw from ``random`` or numpy; restoring
    torch (CPU and CUDA), numpy and Python states makes a run with the hook
    draw the same dropout masks and augmentations as a run without it.
    """
    devices = [torch.cuda.current_device()] \
        if torch.cuda.is_available() else []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@HOOKS.register_module()
@reject_unknown_keys
class RobustEvalHook(Hook):
    """Attacks, missing modality, noise and certificates during training.

    Adding it to ``custom_hooks`` runs :class:`RobustEvaluator` (the driver
    of ``RobustValLoop``/``RobustTestLoop``) on the val dataloader, or on a
    given one, every ``interval`` epochs and/or at the end of training;
    ``val_cfg``/``test_cfg`` stay as they are. Each evaluation

    * logs its ``robust/*`` scalars (``robust/clean``,
      ``robust/pgd_audio@0.5``, ``robust/certified@0.5``, ...; names in
      ``docs/evaluation.md``) to ``runner.message_hub`` and to every
      visualizer backend with ``step`` = the epoch (iteration), so
      ``LocalVisBackend``, TensorBoard and W&B configs show them;
    * writes ``robustness.json``, ``.md`` and ``.png`` to
      ``<report_dir>/epoch_<E>`` (``iter_<I>`` for iteration-based
      training).

    Note:
        * Every rank evaluates its shard and ``RobustAccMetric`` gathers
          one record per sample in dataset order, so a DDP run gives the
          metrics of a single process; the main process writes the report.
        * The model is the unwrapped training model, in eval mode for the
          evaluation with every module's flag restored; parameters,
          buffers (BatchNorm statistics), ``.grad`` and the optimizer are
          never written, and torch/numpy/Python random states are
          restored, so training continues exactly as without the hook.
        * It runs in ``after_train_epoch`` (``after_train_iter``) at
          priority ``LOW``: after ``SyncBuffersHook`` (every rank evaluates
          the same buffers) and before ``CheckpointHook``, so the epoch's
          checkpoint records the evaluation (key ``crmt_robust_eval``). The
          end-of-training evaluation is the last epoch's, for the same
          reason; ``after_train`` only catches up when training stopped
          early. A resumed run never repeats an evaluation; a checkpoint
          without the key (an older one) gives a warning, and the epochs
          whose report exists count as evaluated.
        * ``interval`` counts epochs for an epoch-based train loop,
          iterations otherwise (as ``RobustValLoop``).
        * The scalars do not reach ``metrics`` of ``after_val_epoch``, so
          ``save_best`` cannot use them; use ``RobustValLoop`` for that.
          One hook per config (the checkpoint key is shared).

    Args:
        perturbations (Sequence[dict]): perturbation configs for
            :func:`crmt_mm.attacks.build_perturbations`, as in
            ``RobustTestLoop``. Defaults to ().
        certify (dict, optional): as in ``RobustTestLoop``; with
            ``tau_source='estimate'`` tau is estimated again at every
            evaluation (the model changes). Defaults to None (off).
        interval (int, optional): evaluate every this many epochs
            (iterations); 0 or None: only at the end. Defaults to 1.
        after_train (bool): also evaluate at the end of training.
            Defaults to True.
        dataloader (dict | DataLoader, optional): the data to evaluate; a
            config is built with the runner's seed. Defaults to None (the
            runner's val dataloader).
        report_dir (str, optional): reports go to
            ``<report_dir>/epoch_<E>``. Defaults to None
            (``<work_dir>/robust``).
        log_interval (int, optional): batches between progress lines.
            Defaults to None (about ten per pass, at least every 30 s).
        worst_case (str | dict, optional): ``RobustAccMetric.worst_case``.
            Defaults to None.
        fp16 (bool): autocast the clean pass. Defaults to False.

    Example:
        >>> custom_hooks = [dict(
        ...     type='RobustEvalHook', interval=5,
        ...     perturbations=[
        ...         dict(type='UniModalPGD', modality='audio',
        ...              eps=[0.5, 1.0]),
        ...         dict(type='MissingModality', modality='visual')],
        ...     certify=dict(tau_source='estimate', tau_data='train',
        ...                  tau_max_batches=10))]
    """

    priority = 'LOW'

    def __init__(self, perturbations: Sequence[dict] = (),
                 certify: Optional[dict] = None,
                 interval: Optional[int] = 1, after_train: bool = True,
                 dataloader: Union[None, dict, DataLoader] = None,
                 report_dir: Optional[str] = None,
                 log_interval: Optional[int] = None,
                 worst_case: Union[None, str, dict] = None,
                 fp16: bool = False) -> None:
        interval = 0 if interval is None else interval
        if isinstance(interval, bool) or not isinstance(interval, int) or \
                interval < 0:
            raise ValueError('RobustEvalHook: interval must be an int >= 0 '
                             f'or None (0/None = off), got {interval!r}')
        for name, value in (('after_train', after_train), ('fp16', fp16)):
            if not isinstance(value, bool):
                raise ValueError(f'RobustEvalHook: {name} must be True or '
                                 f'False, got {value!r}')
        if not interval and not after_train:
            raise ValueError('RobustEvalHook never runs with interval='
                             f'{interval!r} and after_train=False; set an '
                             'interval >= 1 and/or after_train=True')
        if not (dataloader is None or isinstance(dataloader, DataLoader)):
            if not isinstance(dataloader, dict):
                raise ValueError('RobustEvalHook: dataloader must be None '
                                 '(the val dataloader), a dataloader config '
                                 f'dict or a DataLoader, got {dataloader!r}')
            missing = [k for k in ('dataset', 'sampler')
                       if k not in dataloader]
            if missing:
                raise ValueError(f'RobustEvalHook: dataloader config lacks '
                                 f'{missing}, e.g. sampler=dict(type='
                                 "'DefaultSampler', shuffle=False)")
        if report_dir is not None and not isinstance(report_dir, str):
            raise ValueError('RobustEvalHook: report_dir must be None or a '
                             f'str, got {report_dir!r}')
        if log_interval is not None and (
                isinstance(log_interval, bool) or
                not isinstance(log_interval, int) or log_interval < 1):
            raise ValueError('RobustEvalHook: log_interval must be None or '
                             f'an int >= 1, got {log_interval!r}')
        # Built now so that a bad perturbation or certify key fails before
        # the runner builds anything; the model-dependent checks (modality
        # names, contract) follow in before_train.
        self.perturbations = build_perturbations(
            list(perturbations), 'RobustEvalHook.perturbations')
        check_certify(certify, [p.describe() for p in self.perturbations])
        if not self.perturbations and certify is None:
            raise ValueError('RobustEvalHook has nothing to evaluate: give '
                             '`perturbations` and/or `certify`')
        self.metric = RobustAccMetric(worst_case=worst_case)
        self.certify = certify
        self.interval = interval
        self.after_train_ = after_train
        self.dataloader = dataloader
        self.report_dir = report_dir
        self.log_interval = log_interval
        self.fp16 = fp16
        #: Epochs (iterations) evaluated in this run, restored on resume.
        self.evaluated: List[int] = []
        self._unit = 'epoch'
        self._loaded: Optional[dict] = None
        self._evaluator: Optional[RobustEvaluator] = None
        self._tau_loader = None

    # ---- set-up ------------------------------------------------------------

    def before_train(self, runner) -> None:
        self._check_hooks(runner)
        self._unit = 'epoch' if isinstance(
            runner.train_loop, EpochBasedTrainLoop) else 'iter'
        self._loader, self._data_name = self._resolve_loader(runner)
        check_loader(runner, self._loader, self._data_name)
        self._evaluator = RobustEvaluator(
            unwrap(runner.model), self.perturbations, self.certify,
            stage='val', fp16=self.fp16, log_interval=self.log_interval,
            logger=runner.logger, who='RobustEvalHook')
        check_tau_data(runner, self._evaluator.certify)
        self._evaluator.bind(self.metric)
        self.metric.dataset_meta = getattr(self._loader.dataset, 'metainfo',
                                           None)
        self.evaluated = self._restore(runner)

    def _check_hooks(self, runner) -> None:
        """One hook per run, ahead of every CheckpointHook."""
        hooks = list(runner.hooks)
        mine = [i for i, h in enumerate(hooks)
                if isinstance(h, RobustEvalHook)]
        if len(mine) > 1:
            raise ValueError(
                f'custom_hooks holds {len(mine)} RobustEvalHook; keep one '
                '(they would share the checkpoint key '
                f'{CHECKPOINT_KEY!r} and the report folders)')
        late = [type(h).__name__ for h in hooks[:mine[0]]
                if isinstance(h, CheckpointHook)]
        if late:
            raise ValueError(
                f'RobustEvalHook (priority {self.priority!r}) runs after '
                f'{late[0]}, so checkpoints would not record its evaluations '
                'and a resumed run would repeat them; give it a priority '
                "above the CheckpointHook's (default 'LOW')")

    def _resolve_loader(self, runner):
        name = 'RobustEvalHook.dataloader'
        if isinstance(self.dataloader, DataLoader):
            return self.dataloader, name
        if isinstance(self.dataloader, dict):
            return Runner.build_dataloader(self.dataloader,
                                           seed=runner.seed), name
        if runner.val_loop is None:
            raise ValueError(
                'RobustEvalHook: dataloader=None evaluates the val '
                'dataloader, but this run has none (val_dataloader/val_cfg/'
                'val_evaluator unset, or --no-validate); give '
                'RobustEvalHook a dataloader config, e.g. dataloader=dict('
                "batch_size=8, dataset=..., sampler=dict(type='DefaultSampler'"
                ', shuffle=False))')
        return runner.val_loop.dataloader, 'the val dataloader'

    # ---- resume ------------------------------------------------------------

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = dict(unit=self._unit,
                                          evaluated=list(self.evaluated))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Called for `load_from` too; before_train tells a resume (the
        # loop's counters restored) from a model load.
        self._loaded = dict(found=checkpoint.get(CHECKPOINT_KEY))

    def _restore(self, runner) -> List[int]:
        """The evaluated points up to the resumed progress ([] if fresh)."""
        done = self._progress(runner)
        if done == 0 or self._loaded is None:
            return []
        record = self._loaded['found']
        if record is not None and record.get('unit') == self._unit:
            return [p for p in record['evaluated'] if p <= done]
        root = self._report_root(runner)
        found = sorted(int(m.group(1)) for m in (
            re.fullmatch(f'{self._unit}_([0-9]+)', name)
            for name in (os.listdir(root) if osp.isdir(root) else ()))
            if m and int(m.group(1)) <= done and
            osp.isfile(osp.join(root, m.group(0), REPORT_FILE)))
        why = 'has no' if record is None else \
            f'counts {record.get("unit")}s, not {self._unit}s, in its'
        runner.logger.warning(
            f'RobustEvalHook: the resumed checkpoint {why} '
            f'{CHECKPOINT_KEY!r} record (saved without this hook or by an '
            f'older crmt_mm); taking the {self._unit}s with a report in '
            f'{root} as evaluated: {found}')
        return found

    # ---- when --------------------------------------------------------------

    def _progress(self, runner) -> int:
        return runner.epoch if self._unit == 'epoch' else runner.iter

    def _last(self, runner) -> int:
        return runner.max_epochs if self._unit == 'epoch' \
            else runner.max_iters

    def _due(self, runner, done: int) -> bool:
        if done in self.evaluated:
            return False
        return bool(self.interval and done % self.interval == 0) or \
            (self.after_train_ and done >= self._last(runner))

    def after_train_epoch(self, runner) -> None:
        # The loop counts the epoch only after this hook point.
        if self._unit == 'epoch' and self._due(runner, runner.epoch + 1):
            self.evaluate(runner, runner.epoch + 1)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if self._unit == 'iter' and self._due(runner, runner.iter + 1):
            self.evaluate(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        # Only when training ended before its last epoch (iteration), e.g.
        # an early-stopping hook: otherwise that one is already evaluated.
        done = self._progress(runner)
        if self.after_train_ and done > 0 and done not in self.evaluated:
            self.evaluate(runner, done)

    # ---- one evaluation ----------------------------------------------------

    def _report_root(self, runner) -> str:
        return self.report_dir or osp.join(runner.work_dir, 'robust')

    def _tau_data(self, runner):
        """The tau loader and its name (built once unless ``'self'``)."""
        if not self._evaluator.needs_tau_data:
            return None, 'certify.tau_data'
        if self._tau_loader is None:
            self._tau_loader = resolve_tau_loader(
                runner, self._evaluator.certify, self._loader, 'val')
        return self._tau_loader

    def evaluate(self, runner, done: int) -> dict:
        """Evaluate now (every rank), log the scalars, write the report.

        Args:
            runner (Runner): the training runner.
            done (int): epochs (iterations) completed, for the step and the
                report folder.

        Returns:
            dict: the ``robust/*`` metrics (on every rank).
        """
        tag = f'{self._unit}_{done}'
        tau_loader, tau_data = self._tau_data(runner)
        run_info = dict(
            checkpoint=f'the training state at {tag} ({tag}.pth if the '
            f'CheckpointHook saves this {self._unit})',
            config=runner.cfg.filename, work_dir=runner.work_dir,
            world_size=runner.world_size, data=self._data_name,
            driver='RobustEvalHook')
        with training_rng_preserved():
            result = self._evaluator.run(self._loader, self.metric,
                                         tau_loader, tau_data, run_info)
        metrics = result['metrics']
        for key, value in metrics.items():
            runner.message_hub.update_scalar(key, value)
        runner.visualizer.add_scalars(metrics, step=done)
        if is_main_process():
            report = build_report(result['records'], self.metric.perturbations,
                                  result['protocol'], progress=tag,
                                  groups=self.metric.groups,
                                  prefix=self.metric.prefix)
            paths = write_report(report, osp.join(self._report_root(runner),
                                                  tag))
            runner.logger.info(
                f'RobustEvalHook {tag}: ' + ', '.join(
                    f'{k}: {v:.4f}' for k, v in metrics.items()) +
                f'; report: {", ".join(paths.values())}')
        self.evaluated.append(done)
        return metrics
