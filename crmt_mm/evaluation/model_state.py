"""Model state during a robust evaluation: eval mode and feature capture.

Both are context managers that leave the model exactly as found, so the
evaluation can run inside training (``RobustValLoop``, an evaluation hook)
without changing what training does next.
"""
import contextlib
from typing import Dict

from torch import Tensor, nn

from crmt_mm.utils import eval_mode  # noqa: F401  (part of this module's API)


@contextlib.contextmanager
def capture_features(model: nn.Module, enabled: bool = True):
    """Keep every modality encoder's output ``{m: [B, D_m]}`` while the
    block runs (forward hooks, removed afterwards).

    The certified radius needs the uni-modal logits of the clean batch,
    which the clean ``predict`` forward already computes; capturing its
    features saves a second encoder pass (only the linear head is re-run).
    Yields an empty dict when disabled or the model has no ``encoders``
    (a model outside crmt_mm: the radii then take a fresh forward).
    """
    feats: Dict[str, Tensor] = {}
    encoders = getattr(model, 'encoders', {}) if enabled else {}
    handles = [
        encoder.register_forward_hook(
            lambda module, args, out, name=name: feats.__setitem__(name, out))
        for name, encoder in encoders.items()
    ]
    try:
        yield feats
    finally:
        for handle in handles:
            handle.remove()
