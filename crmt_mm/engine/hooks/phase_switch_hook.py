"""Switches a CRMT run from step 1 to step 2 at a configured epoch."""
import time
from typing import Optional, Union

from mmaction.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from crmt_mm.certification import estimate_tau_on_loader
from crmt_mm.certification.lipschitz import check_class_chunk
from crmt_mm.utils import reject_unknown_keys
from ..optim_groups import configure_phase2_groups, integration_groups

RESET_MOMENTUM = ('switch', 'epoch')


def unwrap(model):
    """The bare model behind an optional DDP wrapper."""
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
@reject_unknown_keys
class CRMTPhaseSwitchHook(Hook):
    """CRMT step 2: re-weight the integration weights for a larger radius.

    At the first training epoch ``>= switch_epoch`` (tested with ``>=`` so a
    resumed run cannot miss it) the hook, once:

    1. estimates tau (per-modality, per-class Lipschitz constants of the
       uni-modal logits) on the training loader, encoders in eval mode,
       gradients w.r.t. inputs only, all-reduced with MAX across ranks, and
       stores it in the model's ``tau`` buffer;
    2. sets the model's ``phase`` buffer to 2, which keeps the encoders in
       eval mode and makes ``loss()`` return ``-mean r(x)``;
    3. freezes every parameter but the integration weights;
    4. gives their optimizer groups ``lr = lr_factor * initial_lr``,
       ``momentum`` and ``weight_decay`` and clears their optimizer state
       (:func:`~crmt_mm.engine.optim_groups.configure_phase2_groups`).

    In step 2 the logged ``lr`` is the integration weights' lr (mmengine
    logs the first param group's, a frozen one by then).

    Note:
        On resume, ``before_train`` finds ``phase == 2`` in the loaded
        buffers and replays only step 3: tau, lr and momentum come from the
        checkpoint, so the resumed run continues exactly.
        Under DDP the model must be wrapped with
        ``find_unused_parameters=True`` (frozen parameters get no grads).
        End step-1 parameter schedulers at ``switch_epoch``: mmengine's
        schedulers are chainable and would otherwise keep changing the lr.

    Args:
        switch_epoch (int): first epoch (0-based) of step 2; step 1 runs
            epochs ``[0, switch_epoch)``.
        lr_factor (float): step-2 lr as a factor of the configured base lr
            (the group's ``initial_lr``). Defaults to 0.03.
        momentum (float): step-2 SGD momentum. Defaults to 0.9.
        weight_decay (float): step-2 weight decay on a. Defaults to 1e-2.
        tau_max_batches (int, optional): estimate tau on at most this many
            training batches (a documented sub-sample). Defaults to None (the
            whole training set).
        tau_class_chunk (None | int | str): classes per backward in the tau
            estimate: None or 1 is one input-VJP per class; C > 1 batches C
            one-hot cotangents per ``autograd.grad(is_grads_batched=True)``
            (same tau, memory ~ C VJPs); ``'auto'`` is the loop on CPU and
            ``AUTO_CUDA_CLASS_CHUNK`` classes on CUDA. Defaults to None.
        reset_momentum (str): ``'switch'`` clears momentum once at the
            switch; ``'epoch'`` at every step-2 epoch (the reference
            re-creates its optimizer each epoch). Defaults to ``'switch'``.

    Example:
        >>> custom_hooks = [dict(type='CRMTPhaseSwitchHook', switch_epoch=140,
        ...                      lr_factor=0.03, momentum=0.9,
        ...                      weight_decay=1e-2)]
    """
    priority = 'NORMAL'

    def __init__(self, switch_epoch: int, lr_factor: float = 0.03,
                 momentum: float = 0.9, weight_decay: float = 1e-2,
                 tau_max_batches: Optional[int] = None,
                 reset_momentum: str = 'switch',
                 tau_class_chunk: Union[None, int, str] = None) -> None:
        if int(switch_epoch) != switch_epoch or switch_epoch < 0:
            raise ValueError(f'switch_epoch must be an integer >= 0, got '
                             f'{switch_epoch}')
        for name, value in (('lr_factor', lr_factor), ('momentum', momentum),
                            ('weight_decay', weight_decay)):
            if value < 0:
                raise ValueError(f'{name} must be >= 0, got {value}')
        if tau_max_batches is not None and tau_max_batches < 1:
            raise ValueError(f'tau_max_batches must be >= 1 or None, got '
                             f'{tau_max_batches}')
        if reset_momentum not in RESET_MOMENTUM:
            raise ValueError(f'reset_momentum must be one of '
                             f'{RESET_MOMENTUM}, got {reset_momentum!r}')
        self.switch_epoch = int(switch_epoch)
        self.lr_factor = lr_factor
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.tau_max_batches = tau_max_batches
        self.reset_momentum = reset_momentum
        self.tau_class_chunk = check_class_chunk(tau_class_chunk,
                                                 'tau_class_chunk')

    def before_train(self, runner) -> None:
        if self.switch_epoch >= runner.max_epochs:
            raise ValueError(
                f'CRMTPhaseSwitchHook.switch_epoch={self.switch_epoch} must '
                f'be < train_cfg.max_epochs={runner.max_epochs}, or step 2 '
                'never runs; set max_epochs = switch_epoch + phase-2 epochs.')
        wrapped = runner.model
        if is_model_wrapper(wrapped) and not getattr(
                wrapped, 'find_unused_parameters', True):
            raise ValueError(
                'CRMT step 2 freezes parameters, which DDP only allows with '
                'find_unused_parameters=True; add '
                'find_unused_parameters=True to the config.')
        model = unwrap(wrapped)
        if int(model.phase) == 2:
            if not bool((model.tau > 0).any()):
                runner.logger.warning(
                    'checkpoint is in phase 2 but has no tau (foreign or '
                    'older checkpoint): estimating it again.')
                self._estimate_tau(runner, model)
            model.freeze_for_phase2()
            model.train(model.training)
            runner.logger.info(f'resumed in CRMT phase 2 at epoch '
                               f'{runner.epoch}; only a^(m) trains')

    def before_train_epoch(self, runner) -> None:
        model = unwrap(runner.model)
        if int(model.phase) == 1 and runner.epoch >= self.switch_epoch:
            self._switch(runner, model)
        elif int(model.phase) == 2 and self.reset_momentum == 'epoch':
            configure_phase2_groups(runner.optim_wrapper.optimizer,
                                    model.integration_parameters(), None,
                                    self.momentum, self.weight_decay)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        model = unwrap(runner.model)
        if int(model.phase) != 2:
            return
        # mmengine's RuntimeInfoHook (priority VERY_HIGH, so it ran before
        # this NORMAL hook) has just logged the first param group's lr as
        # `train/lr`; in step 2 that group is frozen. The log processor
        # shows the latest value of `train/lr`, so recording the
        # integration weights' lr here makes the log line show it.
        group = integration_groups(runner.optim_wrapper.optimizer,
                                   model.integration_parameters())[0]
        runner.message_hub.update_scalar('train/lr', group['lr'])

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        model = unwrap(runner.model)
        if int(model.phase) == 2:
            model.constrain_integration_()

    def _switch(self, runner, model) -> None:
        self._estimate_tau(runner, model)
        model.phase.fill_(2)
        model.freeze_for_phase2()
        model.constrain_integration_()
        model.train(model.training)
        configure_phase2_groups(runner.optim_wrapper.optimizer,
                                model.integration_parameters(),
                                self.lr_factor, self.momentum,
                                self.weight_decay)
        self._forget_phase1_scalars(runner.message_hub)
        runner.logger.info(
            f'CRMT phase 2 from epoch {runner.epoch}: only a^(m) trains, '
            f'encoders frozen in eval mode')

    @staticmethod
    def _forget_phase1_scalars(message_hub) -> None:
        """Drop the step-1 loss and accuracy scalars from the message hub.

        An edit of runner state, on purpose: the log processor writes every
        ``train/`` scalar of the hub into each log line (losses as a window
        mean), so without this the step-1 parts (``loss_cls``,
        ``loss_margin``, ``acc_<modality>``) would be logged with stale
        values for all of step 2, and ``train/loss`` would average CE and
        -r(x) over the smoothing window. MessageHub offers no method to
        remove a scalar; ``log_scalars`` is its public property returning
        the live dict, so entries are deleted from it.
        """
        scalars = message_hub.log_scalars
        for key in [k for k in scalars if k.startswith('train/')
                    and ('loss' in k or k.startswith('train/acc_'))]:
            del scalars[key]

    def _estimate_tau(self, runner, model) -> None:
        start = time.perf_counter()
        result = estimate_tau_on_loader(
            model, runner.train_dataloader,
            max_batches=self.tau_max_batches,
            class_chunk=self.tau_class_chunk, logger=runner.logger)
        tau = result['tau']
        model.tau.copy_(tau)
        summary = ', '.join(
            f'{m}: min {row.min():.4g} mean {row.mean():.4g} max '
            f'{row.max():.4g}' for m, row in zip(model.modalities, tau))
        runner.logger.info(
            f'tau estimated on {result["num_samples"]} training samples '
            '(all ranks; eval mode, input gradients, max over ranks) in '
            f'{time.perf_counter() - start:.1f}s: {summary}')
