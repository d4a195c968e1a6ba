"""Progress lines with an ETA for evaluation passes, also on small loaders.

mmengine's ``LoggerHook`` logs every ``interval`` (10) iterations, so a
test set of fewer batches prints nothing until the end. :class:`Progress`
logs at a cadence fitted to the loader (about ten lines per pass, and at
least every ``seconds``); :class:`EvalProgressHook` uses it for any
validation or test loop.
"""
from typing import Optional

from mmaction.registry import HOOKS
from mmengine.hooks import Hook

# Progress and format_seconds live in crmt_mm.utils (tau estimation uses
# them too) and are re-exported here.
from crmt_mm.utils import (Progress, format_seconds,  # noqa: F401
                           reject_unknown_keys)


@HOOKS.register_module()
@reject_unknown_keys
class EvalProgressHook(Hook):
    """Batches done and ETA of every validation and test pass.

    ``tools/test.py`` adds it unless the test loop prints its own
    progress (the robust loops do).

    Args:
        every (int, optional): batches between lines. Defaults to None
            (about ten lines per pass).
        seconds (float): longest silence between lines. Defaults to 30.

    Example:
        >>> custom_hooks = [dict(type='EvalProgressHook')]
    """

    priority = 'LOW'

    def __init__(self, every: Optional[int] = None,
                 seconds: float = 30.0) -> None:
        self.every = every
        self.seconds = seconds
        Progress(1, every, seconds)  # checks the arguments now
        self._progress: Optional[Progress] = None

    def _begin(self, runner, loader) -> None:
        self._progress = Progress(len(loader), self.every, self.seconds)

    def _iter(self, runner, stage: str, batch_idx: int) -> None:
        if self._progress is not None and self._progress.due(batch_idx + 1):
            runner.logger.info(f'{stage} {self._progress.line(batch_idx + 1)}')

    def before_val_epoch(self, runner) -> None:
        self._begin(runner, runner.val_dataloader)

    def before_test_epoch(self, runner) -> None:
        self._begin(runner, runner.test_dataloader)

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None) -> None:
        self._iter(runner, 'val', batch_idx)

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None) -> None:
        self._iter(runner, 'test', batch_idx)
