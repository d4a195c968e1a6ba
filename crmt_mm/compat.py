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
   contain (see :data:`SAFE_CHECKPOINT_GLOBALS`). A file that needs anything
   else is refused with an error explaining how to trust it explicitly: set
   ``CRMT_TRUST_CHECKPOINTS=1`` (full pickle, runs code from the file: only for
   files you trust). Stock mmengine pickles ``HistoryBuffer`` together with
   its statistics *functions* (``getattr(HistoryBuffer, 'min')``), and
   allowing ``getattr`` would let any file call anything; we therefore also
   make ``HistoryBuffer`` pickle without them (they are class-level
   registrations, restored on import). Checkpoints written by stock mmengine
   need the trust flag once; those written with crmt_mm imported do not.
"""
import importlib.util
import os
import sys
import types

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


def safe_torch_load(filename: str, map_location=None):
    """Load a checkpoint with torch's restricted unpickler.

    Only tensors, containers, numpy arrays/scalars and mmengine's
    ``HistoryBuffer`` are accepted. Raises ``RuntimeError`` naming the file
    and the opt-in for anything else.
    """
    if trusted():
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except Exception as err:  # torch raises UnpicklingError or RuntimeError
        if 'weights_only' not in str(err) and 'Unpickl' not in type(
                err).__name__:
            raise
        raise RuntimeError(
            f'Refusing to load checkpoint {filename!r}: it contains objects '
            'outside the safe allow-list (tensors, numpy arrays, mmengine '
            'HistoryBuffer), and unpickling them could run code from the '
            f'file. If you trust this file, set {TRUST_ENV}=1 and retry. '
            f'Details: {str(err).splitlines()[0]}') from err


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


def apply() -> None:
    """Apply every fix; idempotent."""
    _install_drn_stub()
    _install_checkpoint_loader()


apply()
