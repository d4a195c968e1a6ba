"""Epoch-based train loop whose CRMT step-2 epochs run on cached logits."""
from typing import Iterator, Optional, Tuple

import torch
from mmaction.registry import LOOPS
from mmengine.dist import all_reduce, get_world_size
from mmengine.dataset import DefaultSampler
from mmengine.runner import EpochBasedTrainLoop
from torch import Tensor
from torch.utils.data import DataLoader

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
        have the training loader's batch size and count, shuffled with a
        generator seeded by the epoch, so resumed runs repeat them exactly.
        Under DDP the integration weights' gradients are averaged across
        ranks before each step, as DDP would.

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
        with optim_wrapper.optim_context(model):
            losses = model.radius_loss(*batch)
        loss, log_vars = model.parse_losses(losses)
        optim_wrapper.backward(loss)
        if get_world_size() > 1:
            for p in model.integration_parameters():
                if p.grad is not None:
                    all_reduce(p.grad, op='mean')
        optim_wrapper.step()
        optim_wrapper.zero_grad()
        runner.call_hook('after_train_iter', batch_idx=idx, data_batch=None,
                         outputs=log_vars)
        self._iter += 1
