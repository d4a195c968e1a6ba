"""The end of a ``tools/train.py``/``tools/test.py`` process: tear down the
process group and leave without racing gloo's worker threads."""
import logging
import os
import sys

import torch.distributed as dist

__all__ = ['end_run', 'exit_process']

#: Set by :func:`end_run` once it has torn down a process group; read by
#: :func:`exit_process`.
_TORN_DOWN = False


def end_run(runner) -> None:
    """Orderly end of a finished ``tools/train.py``/``test.py`` run.

    Stops the persistent dataloader workers, then, under
    ``torch.distributed``, waits at a barrier until every rank has finished
    its last collective and destroys the process group.

    Why: gloo runs each collective on a worker thread of the
    ``ProcessGroupGloo`` (``pt_gloo_runloop``), which drops its reference to
    the finished work (and so to the tensors of the collective) *after*
    waking the caller. A tensor that Python no longer references is freed
    there, and freeing its Python object takes the GIL. If the main thread
    has meanwhile reached interpreter finalization, Python 3.11 ends such a
    thread with ``pthread_exit``, whose forced unwind through a ``noexcept``
    destructor calls ``std::terminate``: the rank dies with SIGABRT and
    "terminate called without an active exception". The threads are joined
    only when the process group object is destroyed, and
    ``destroy_process_group()`` alone does not destroy it once a DDP wrapper
    was built (the DDP module, its reducer and the default arguments of
    ``torch.distributed.nn.functional``, which DDP imports, keep it alive),
    so the tools end with :func:`exit_process` after this.
    """
    global _TORN_DOWN
    from crmt_mm.utils import release_loader_workers
    release_loader_workers(runner)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        _TORN_DOWN = True


def exit_process(code: int = 0) -> None:
    """Leave a tool process that ran distributed without finalizing Python.

    After :func:`end_run` tore down a process group, gloo's worker threads
    may still be alive (see :func:`end_run`), and interpreter finalization
    would race them; so the log handlers and standard streams are flushed
    and the process exits with ``os._exit(code)``. Checkpoints,
    ``last_checkpoint``, metrics and reports are on disk by then (written
    and fsynced synchronously; the visualizer is closed by
    ``LoggerHook.after_run``). Without a torn-down process group (a
    single-process run, or ``main(argv)`` called in-process by a test) it
    returns and Python exits normally.
    """
    if not _TORN_DOWN:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
