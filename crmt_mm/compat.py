"""Compatibility fixes for the pinned OpenMMLab stack.

Imported first by :mod:`crmt_mm` and by every script under ``tools/`` (before
``Config.fromfile``), so the fixes hold even without ``custom_imports``.

1. ``mmaction.models.localizers.drn`` is missing from the mmaction2 1.2.0
   wheel (the folder has no ``__init__.py``), yet ``mmaction.models`` imports
   ``DRN`` from it (open-mmlab/mmaction2#2714). We register a stub module whose
   ``DRN`` raises a clear error when constructed.
2. torch >= 2.6 loads checkpoints with ``weights_only=True`` by default and
   mmengine 0.10.7 does not pass the flag, so its own checkpoints (which hold
   ``HistoryBuffer`` objects and numpy arrays in ``message_hub``) fail to load
   (open-mmlab/mmengine#1655). Rather than switching the safe unpickler off we
   keep it and allow-list the few plain-data classes mmengine checkpoints
   contain (see :func:`_safe_globals`). A file that needs anything
   else is refused with an error explaining how to trust it explicitly: set
   ``CRMT_TRUST_CHECKPOINTS=1`` (full pickle, runs code from the file: only for
   files you trust). An empty, truncated or garbage file is called corrupt
   instead (:class:`CorruptCheckpointError`): torch's own message for it
   suggests full unpickling, which cannot help and must not be tried on a
   file of unknown content. Stock mmengine pickles ``HistoryBuffer``
   together with its statistics *functions*
   (``getattr(HistoryBuffer, 'min')``), and
   allowing ``getattr`` would let any file call anything; we therefore also
   make ``HistoryBuffer`` pickle without them (they are class-level
   registrations, restored on import). Checkpoints written by stock mmengine
   need the trust flag once; those written with crmt_mm imported do not.
3. mmengine 0.10.7 writes checkpoints and the ``last_checkpoint`` pointer in
   place (``open(path, 'wb')`` then ``write``), so a job killed while saving
   (pre-emption, OOM killer) leaves a truncated ``epoch_N.pth`` that
   ``--resume`` then fails to read, or an empty ``last_checkpoint`` that makes
   ``--resume`` fail with a bare "can not be found". Both writes are made
   atomic with :func:`atomic_write` (see
   :func:`_install_atomic_checkpoint_saving`).
"""
import contextlib
import importlib.util
import os
import os.path as osp
import pickle
import re
import struct
import sys
import types
import uuid
import zipfile

import numpy as np
import torch

TRUST_ENV = 'CRMT_TRUST_CHECKPOINTS'


def _install_drn_stub() -> None:
    name = 'mmaction.models.localizers.drn'
    if name in sys.modules:
        return
    try:
        found = importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        found = False
    if found:
        return

    class DRN:  # noqa: D401 - placeholder with the upstream name
        """Placeholder for mmaction2's DRN localizer (missing in the wheel)."""

        def __init__(self, *args, **kwargs):
            raise ImportError(
                'DRN is unavailable: the mmaction2 1.2.0 wheel does not ship '
                'mmaction/models/localizers/drn (mmaction2#2714). Install '
                'mmaction2 from source to use it.')

    package = types.ModuleType(name)
    package.__path__ = []
    module = types.ModuleType(name + '.drn')
    module.DRN = DRN
    package.drn = module
    package.DRN = DRN
    sys.modules[name] = package
    sys.modules[name + '.drn'] = module


def _numpy_globals() -> list:
    """Numpy classes that plain arrays and scalars unpickle through."""
    core = getattr(np, '_core', None) or np.core
    names = [core.multiarray._reconstruct, core.multiarray.scalar,
             np.ndarray, np.dtype]
    names += [getattr(np.dtypes, n) for n in dir(np.dtypes)
              if n.endswith('DType')]
    return names


def _safe_globals() -> list:
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer] + _numpy_globals()


def trusted() -> bool:
    """Whether the user opted into full (code-executing) unpickling."""
    return os.environ.get(TRUST_ENV, '0').lower() in ('1', 'true', 'yes')


#: What torch's restricted unpickler says when a well-formed file needs a
#: class or function outside the allow-list: the one failure the trust flag
#: can help with. Any other failure to read a file means it is damaged.
FOREIGN_GLOBAL_MARKERS = ('Unsupported global', 'unsupported GLOBAL',
                          'allowlisted', 'unrecognized function')
#: Errors of torch.load on a truncated, empty or non-checkpoint file: the
#: pickle stream ends early or holds garbage, or the zip container (the
#: format of torch.save since 1.6) is broken.
CORRUPT_ERRORS = (EOFError, pickle.UnpicklingError, IndexError,
                  struct.error, zipfile.BadZipFile)
CORRUPT_MARKERS = ('PytorchStreamReader', 'zip archive')


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is empty, truncated or not a checkpoint at all."""


def safe_torch_load(filename: str, map_location=None):
    """Load a checkpoint with torch's restricted unpickler.

    Only tensors, containers, numpy arrays/scalars and mmengine's
    ``HistoryBuffer`` are accepted.

    Raises:
        RuntimeError: a well-formed checkpoint that needs classes or
            functions outside that allow-list: names the file, the objects
            and the opt-in ``CRMT_TRUST_CHECKPOINTS=1``.
        CorruptCheckpointError: an empty, truncated or garbage file (with
            or without the opt-in, which cannot help): names the file and
            its size.
    """
    try:
        if trusted():
            return torch.load(filename, map_location=map_location,
                              weights_only=False)
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except Exception as err:
        text = str(err)
        if not trusted() and isinstance(err, pickle.UnpicklingError) and \
                any(m in text for m in FOREIGN_GLOBAL_MARKERS):
            found = re.findall(r'GLOBAL (\S+)', text)
            raise RuntimeError(
                f'Refusing to load checkpoint {filename!r}: it contains '
                f'objects outside the safe allow-list (tensors, numpy arrays, '
                'mmengine HistoryBuffer)'
                f'{": " + ", ".join(found) if found else ""}, and unpickling '
                'them could run code from the file. If you trust this file, '
                f'set {TRUST_ENV}=1 and retry. Details: '
                f'{_torch_detail(err)}') from err
        if isinstance(err, CORRUPT_ERRORS) or (
                isinstance(err, RuntimeError) and
                any(m in text for m in CORRUPT_MARKERS)):
            raise CorruptCheckpointError(_corrupt_message(filename,
                                                          err)) from err
        raise


def _torch_detail(err: Exception) -> str:
    """The line of torch's error that names the problem, without its
    generic advice (torch suggests ``weights_only=False``, the very thing
    that runs code, even for a corrupt file)."""
    generic = ('weights_only', 'Weights only', 'Check the documentation',
               'Please file an issue', 'do those steps only')
    lines = [line.strip() for line in str(err).splitlines()]
    lines = [line.replace('WeightsUnpickler error:', '').strip()
             for line in lines if line and not any(g in line
                                                   for g in generic)]
    lines = [line for line in lines if line]
    return f'{type(err).__name__}: {lines[0].rstrip(".")}' if lines \
        else type(err).__name__


def _corrupt_message(filename: str, err: Exception) -> str:
    size = osp.getsize(filename) if osp.isfile(filename) else None
    what = 'empty (0 bytes)' if size == 0 else \
        f'corrupt ({size} bytes; not a readable torch checkpoint)'
    return (f'Checkpoint {filename!r} is {what}: {_torch_detail(err)}. '
            'It was cut short (a save or copy that did not '
            'finish) or is another kind of file. Copy it again, or use '
            'another checkpoint (e.g. the previous epoch_N.pth of the run); '
            f'{TRUST_ENV}=1 cannot read it either.')


def _history_buffer_state(buffer) -> dict:
    return {k: v for k, v in buffer.__dict__.items()
            if k != 'statistics_methods'}


def _install_checkpoint_loader() -> None:
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_state

    from mmengine.runner.checkpoint import CheckpointLoader

    def load_from_local(filename, map_location=None):
        filename = os.path.expanduser(filename)
        if not os.path.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        return safe_torch_load(filename, map_location)

    CheckpointLoader.register_scheme(prefixes='', force=True)(load_from_local)


@contextlib.contextmanager
def atomic_write(path, mode: str = 'wb'):
    """Open ``path`` for writing so that no reader ever sees a partial file.

    The data goes to a hidden temporary file in the same directory (so the
    final rename stays on one file system, where it is atomic), which is
    flushed, fsynced and renamed over ``path`` only when the block exits
    normally. On an exception the temporary file is removed and ``path``
    keeps its previous content. A process killed inside the block leaves
    ``path`` untouched and at worst a stray ``.<name>.<hex>.tmp`` file.

    Args:
        path (str | PathLike): The file to (re)write.
        mode (str): ``'wb'`` or ``'w'``. Defaults to ``'wb'``.

    Example:
        >>> with atomic_write('work_dirs/run/last_checkpoint', 'w') as f:
        ...     f.write('work_dirs/run/epoch_3.pth')
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f"atomic_write supports modes 'w' and 'wb', got "
                         f'{mode!r}')
    directory, name = osp.split(osp.abspath(path))
    tmp = osp.join(directory, f'.{name}.{uuid.uuid4().hex[:8]}.tmp')
    # os.open applies the umask as open() does; tempfile.mkstemp would
    # create the checkpoint 0600, unreadable to the rest of a shared group.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    # Persist the rename itself, so that a node crash (not only a killed
    # process) cannot roll the directory back to the old entry. Best
    # effort: some network file systems refuse to fsync a directory, and
    # the checkpoint is already complete under its final name.
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _install_atomic_checkpoint_saving() -> None:
    """Route mmengine's two checkpoint writes through :func:`atomic_write`.

    ``save_checkpoint`` serialises into memory and hands the bytes to the
    file backend's ``put``; ``LocalBackend.put`` is the one place where
    every local ``epoch_N.pth``/``best_*.pth`` reaches the disk, whereas
    ``save_checkpoint`` itself is bound by name in three modules (runner,
    checkpoint hook, checkpoint) and has a remote branch we would have to
    copy. Other binary writes through the local backend (``dump`` of
    ``.pkl`` results) become atomic too, which only helps.

    ``CheckpointHook`` writes ``last_checkpoint`` with a bare
    ``open(path, 'w')``, its only use of ``open``; a module-level ``open``
    in that module shadows the builtin there and nowhere else.
    """
    from mmengine.fileio.backends.local_backend import LocalBackend
    from mmengine.hooks import checkpoint_hook
    from mmengine.utils import mkdir_or_exist

    def put(self, obj: bytes, filepath) -> None:
        mkdir_or_exist(osp.dirname(os.fspath(filepath)))
        with atomic_write(filepath, 'wb') as f:
            f.write(obj)

    LocalBackend.put = put
    checkpoint_hook.open = atomic_write


def apply() -> None:
    """Apply every fix; idempotent."""
    _install_drn_stub()
    _install_checkpoint_loader()
    _install_atomic_checkpoint_saving()


apply()
