"""Epoch-based train loop whose CRMT step-2 epochs run on cached logits."""
import contextlib
from typing import Iterator, List, Optional, Tuple

import torch
from mmaction.registry import LOOPS
from mmengine.dist import all_reduce, get_world_size
from mmengine.dataset import DefaultSampler
from mmengine.runner import EpochBasedTrainLoop
from torch import Tensor
from torch.utils.data import DataLoader

from crmt_mm.models.recognizers.crmt_recognizer import check_loader
from crmt_mm.utils import reject_unknown_keys
from ..hooks.phase_switch_hook import unwrap

PHASE2_MODES = ('cached', 'streaming')


@LOOPS.register_module()
@reject_unknown_keys
class CRMTTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` with a fast CRMT step 2.

    In step 2 the encoders and classifier rows are frozen and run in eval
    mode, so each training sample's uni-modal logits ``z`` are fixed. With
    ``phase2_mode='cached'`` the loop computes them once (one pass over
    this rank's training loader, no gradients) and every step-2 epoch
    optimises the integration weights on shuffled mini-batches of the
    cached ``[N, M, K]`` tensor: no data loading, no encoder forward.
    ``'streaming'`` runs step 2 like any epoch (the reference's way).

    Note:
        The cache is exact when the training pipeline is deterministic
        (AV-Digits). With random augmentation it fixes one draw, while
        streaming re-draws every epoch. The cache is rebuilt (identically)
        after a resume instead of being stored in checkpoints. Mini-batches
        have the training loader's count (so ``max_iters`` and the
        schedulers agree with streaming), shuffled with a generator seeded
        by the epoch, so resumed runs repeat them exactly. Each step goes
        through ``optim_wrapper.update_params``, so gradient accumulation
        (``accumulative_counts``), AMP loss scaling and gradient clipping
        behave as in step 1. Under DDP the integration weights' gradients
        are averaged across ranks before each optimizer step, as DDP would.

    Args:
        runner, dataloader, max_epochs, val_begin, val_interval,
        dynamic_intervals: as :class:`mmengine.runner.EpochBasedTrainLoop`.
        phase2_mode (str): ``'cached'`` or ``'streaming'``.
            Defaults to ``'cached'``.

    Example:
        >>> train_cfg = dict(type='CRMTTrainLoop', max_epochs=185,
        ...                  val_interval=5, phase2_mode='cached')
    """

    def __init__(self, runner, dataloader, max_epochs: int,
                 val_begin: int = 1, val_interval: int = 1,
                 dynamic_intervals=None,
                 phase2_mode: str = 'cached') -> None:
        super().__init__(runner, dataloader, max_epochs, val_begin,
                         val_interval, dynamic_intervals)
        if phase2_mode not in PHASE2_MODES:
            raise ValueError(f'phase2_mode must be one of {PHASE2_MODES}, '
                             f'got {phase2_mode!r}')
        self.phase2_mode = phase2_mode
        self._cache: Optional[Tuple[Tensor, Tensor]] = None
        # The pipeline against the model (input keys, stock-branch
        # layouts) before any hook or weight download runs.
        check_loader(runner, self.dataloader, 'train_dataloader')

    def run(self):
        """Check the validation pipeline like the training one (the runner
        builds the val loop after this loop), then train."""
        val_loop = getattr(self.runner, '_val_loop', None)
        if val_loop is not None and not isinstance(val_loop, dict):
            check_loader(self.runner, val_loop.dataloader, 'val_dataloader')
        return super().run()

    def run_epoch(self) -> None:
        """One epoch; step-2 epochs use the cache in ``'cached'`` mode."""
        self.runner.call_hook('before_train_epoch')  # may switch phase
        self.runner.model.train()
        model = unwrap(self.runner.model)
        if int(model.phase) == 2 and self.phase2_mode == 'cached':
            for idx, batch in enumerate(self._cached_batches(model)):
                self._run_cached_iter(idx, batch, model)
        else:
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    @torch.no_grad()
    def _build_cache(self, model) -> Tuple[Tensor, Tensor]:
        was_training = model.training
        model.eval()
        try:
            logits, labels = [], []
            for batch in self._ordered_loader():
                data = model.data_preprocessor(batch, False)
                x = model.split_inputs(data['inputs'])
                z = model.modality_logits(x)
                logits.append(torch.stack([z[m] for m in model.modalities]))
                labels.append(model.labels_of(data['data_samples']))
        finally:
            model.train(was_training)
        self.runner.logger.info(
            f'CRMT step 2: cached uni-modal logits of '
            f'{sum(len(y) for y in labels)} training samples on this rank')
        return torch.cat(logits, dim=1), torch.cat(labels)

    def _ordered_loader(self) -> DataLoader:
        """The training loader's data in a fixed (unshuffled) order, so the
        cache, and hence resumed runs, do not depend on the epoch at which
        it is built."""
        loader = self.dataloader
        return DataLoader(
            loader.dataset, batch_size=loader.batch_size,
            sampler=DefaultSampler(loader.dataset, shuffle=False),
            num_workers=loader.num_workers, collate_fn=loader.collate_fn)

    def _cached_batches(self, model) -> Iterator[Tuple[Tensor, Tensor]]:
        if self._cache is None:
            self._cache = self._build_cache(model)
        z, labels = self._cache
        generator = torch.Generator().manual_seed(self._epoch)
        order = torch.randperm(labels.numel(), generator=generator)
        batches = max(len(self.dataloader), 1)
        for chunk in order.to(labels.device).tensor_split(batches):
            if chunk.numel():
                yield z[:, chunk], labels[chunk]

    def _run_cached_iter(self, idx: int, batch, model) -> None:
        runner = self.runner
        runner.call_hook('before_train_iter', batch_idx=idx, data_batch=None)
        optim_wrapper = runner.optim_wrapper
        # As BaseModel.train_step: forward in optim_context (AMP autocast),
        # backward, accumulation and step in update_params.
        with optim_wrapper.optim_context(model):
            losses = model.radius_loss(*batch)
        loss, log_vars = model.parse_losses(losses)
        sync = get_world_size() > 1 and optim_wrapper.should_sync()
        with _average_across_ranks(model.integration_parameters(), sync):
            optim_wrapper.update_params(loss)
        runner.call_hook('after_train_iter', batch_idx=idx, data_batch=None,
                         outputs=log_vars)
        self._iter += 1


def _all_reduce_grad(param) -> None:
    all_reduce(param.grad, op='mean')


@contextlib.contextmanager
def _average_across_ranks(params: List[Tensor], enabled: bool):
    """Average the gradients of ``params`` across ranks in their backward.

    The cached step calls the bare model, so DDP's gradient all-reduce does
    not happen. It is reproduced with a post-accumulate-grad hook on each
    parameter: it fires inside ``optim_wrapper.update_params``'s backward,
    after the gradient is accumulated and before ``step``, and averages the
    accumulated gradient. ``enabled`` is ``optim_wrapper.should_sync()``,
    which is True only for the backward that precedes an optimizer step,
    the rule by which ``optim_context`` skips DDP's sync while gradients
    accumulate. This keeps ``update_params`` (accumulation, AMP scaling,
    clipping) untouched for every OptimWrapper type, with no crmt-specific
    wrapper to configure.
    """
    handles = [p.register_post_accumulate_grad_hook(_all_reduce_grad)
               for p in params] if enabled else []
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
