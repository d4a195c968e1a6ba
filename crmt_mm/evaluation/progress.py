"""Progress lines with an ETA for evaluation passes, also on small loaders.

mmengine's ``LoggerHook`` logs every ``interval`` (10) iterations, so a
test set of fewer batches prints nothing until the end. :class:`Progress`
logs at a cadence fitted to the loader (about ten lines per pass, and at
least every ``seconds``); :class:`EvalProgressHook` uses it for any
validation or test loop.
"""
import time
from typing import Callable, Optional

from mmaction.registry import HOOKS
from mmengine.hooks import Hook

from crmt_mm.utils import reject_unknown_keys


def format_seconds(seconds: float) -> str:
    """``'1:02:03'`` / ``'2:03'`` / ``'4.2s'``."""
    if seconds < 60:
        return f'{seconds:.1f}s'
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}:{minutes:02d}:{secs:02d}' if hours \
        else f'{minutes}:{secs:02d}'


class Progress:
    """When to print a progress line and what it says.

    A line is due after the first batch, every ``every`` batches (default
    ``max(1, total // 10)``), when ``seconds`` passed since the last line,
    and after the last batch.

    Args:
        total (int): batches of the pass.
        every (int, optional): batches between lines. Defaults to None
            (``max(1, total // 10)``).
        seconds (float): longest silence between lines, in seconds.
            Defaults to 30.
        clock (callable): seconds now. Defaults to ``time.perf_counter``.
    """

    def __init__(self, total: int, every: Optional[int] = None,
                 seconds: float = 30.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if every is not None and (isinstance(every, bool) or
                                  not isinstance(every, int) or every < 1):
            raise ValueError(f'every must be None or an int >= 1, got '
                             f'{every!r}')
        self.total = int(total)
        self.every = every if every is not None else max(1, self.total // 10)
        self.seconds = float(seconds)
        self.clock = clock
        self.start = self.last = clock()

    def due(self, done: int) -> bool:
        """True if a line is due after ``done`` batches."""
        now = self.clock()
        if done in (1, self.total) or done % self.every == 0 or \
                now - self.last >= self.seconds:
            self.last = now
            return True
        return False

    def line(self, done: int) -> str:
        """``'[3/10] 2.1s elapsed, ETA 4.9s'``."""
        elapsed = self.clock() - self.start
        eta = elapsed / max(done, 1) * max(self.total - done, 0)
        return (f'[{done}/{self.total}] {format_seconds(elapsed)} elapsed, '
                f'ETA {format_seconds(eta)}')


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
