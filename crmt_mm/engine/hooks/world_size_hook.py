"""Record the world size in checkpoints; check it when a run resumes."""
from typing import Optional

from mmaction.registry import HOOKS
from mmengine.hooks import Hook

#: Keys this hook adds to ``checkpoint['meta']``.
WORLD_SIZE_KEY = 'world_size'
BATCH_SIZE_KEY = 'train_batch_size'


def _train_batch_size(runner) -> Optional[int]:
    """Per-process batch size of the built training loader, else None."""
    loop = getattr(runner, '_train_loop', None)
    loader = getattr(loop, 'dataloader', None)
    return getattr(loader, 'batch_size', None)


@HOOKS.register_module()
class ResumeWorldSizeHook(Hook):
    """Resume across world sizes only with the same effective batch.

    Every checkpoint records in ``meta`` the world size and the per-process
    training batch size of the run that wrote it. When a run *resumes*
    (``--resume``; not ``load_from`` or testing) from a checkpoint written
    with another world size or batch size:

    - if the effective batch ``world_size * train_dataloader.batch_size``
      differs, the resume is refused with a ``RuntimeError`` that says why
      and gives the batch size that keeps it: the learning rate, the weight
      decay and the iteration count per epoch (on which ``iter`` in the
      checkpoint and iteration-based schedules rest) were set for the old
      effective batch;
    - if it is the same, the run resumes and a warning says what differs
      from an uninterrupted run (docs/reliability.md, section 9): step-1
      BatchNorm batch statistics (per process), the data each process sees,
      and the step-2 mini-batches (each rank shuffles its own cached shard).

    Checkpoints without the record (written before this hook existed, or by
    a runner without it) resume unchecked, with a log line saying so.
    """

    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.setdefault('meta', {})
        meta[WORLD_SIZE_KEY] = int(runner.world_size)
        batch_size = _train_batch_size(runner)
        if batch_size is not None:
            meta[BATCH_SIZE_KEY] = int(batch_size)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):
            return
        meta = checkpoint.get('meta') or {}
        old_world, old_batch = meta.get(WORLD_SIZE_KEY), \
            meta.get(BATCH_SIZE_KEY)
        new_world, new_batch = int(runner.world_size), \
            _train_batch_size(runner)
        if old_world is None or old_batch is None or new_batch is None:
            runner.logger.info(
                'resume: the checkpoint does not record the world size and '
                'batch size of its run; the effective batch is not checked.')
            return
        if (old_world, old_batch) == (new_world, new_batch):
            return
        old_total, new_total = old_world * old_batch, new_world * new_batch
        if old_total != new_total:
            keep = (f'set train_dataloader.batch_size={old_total // new_world}'
                    f' (--cfg-options train_dataloader.batch_size='
                    f'{old_total // new_world})' if old_total % new_world == 0
                    else f'resume with {old_world} process(es)')
            raise RuntimeError(
                f'--resume: the checkpoint was trained with {old_world} '
                f'process(es) x batch size {old_batch} = {old_total} samples '
                f'per step; this run has {new_world} x {new_batch} = '
                f'{new_total}. Resuming would change the effective batch, '
                'for which the learning rate, the weight decay and the '
                'iterations per epoch (the checkpoint\'s iteration count and '
                'iteration-based schedules) were set, so the run would not '
                f'continue the same training. To resume, {keep}.')
        runner.logger.warning(
            f'resume: the checkpoint was trained with {old_world} '
            f'process(es) x batch size {old_batch}; this run uses '
            f'{new_world} x {new_batch} (the same {new_total} samples per '
            'step). It continues the same schedule but is not a replay of an '
            'uninterrupted run: step-1 BatchNorm uses per-process batch '
            'statistics and step-2 mini-batches are drawn per process, so '
            'weights, tau and a differ within the tolerances of '
            'docs/reliability.md (section 9).')
