"""A seeded subsample of the evaluated clips for the expensive attacks.

The strong ensemble (``MultiModalAutoAttack(version='standard')``) costs
hundreds of forward-backward passes per clip, so a demo may run it on a
seeded subsample of the test set while everything else sees every clip.
``scope`` says what the subsample covers:

* ``'strong'``: the ensembles whose version is not ``'reference'`` (and the
  large-budget trust attacks);
* ``'attacks'``: every adversarial attack (any ensemble, PGD, FGM, APGD,
  Square, joint PGD), so that the reference attacks and the strong ones are
  compared on the same clips.

Clean accuracy, missing modality, noise and certificates always see every
clip.
A clip's membership is decided from its own content, a hash of its
preprocessed inputs and the seed: the same clip is in or out whatever the
batch size, the order or the number of DDP ranks, so a DDP run keeps the
single-process outcome. The subsample's size is therefore binomial around
the requested one; the report states the exact count.
"""
import hashlib
from typing import Dict, Optional

import torch
from torch import Tensor

SUBSET_KEYS = ('size', 'seed', 'scope')
SCOPES = ('strong', 'attacks')


def check_subset(subset: Optional[dict]) -> Optional[dict]:
    """Validate ``subset=dict(size=N, seed=S, scope='strong')`` (None =
    every clip); the result has all three keys.

    Raises:
        ValueError: unknown keys, ``size`` not an int >= 1, ``seed`` not
            an int or ``scope`` not one of :data:`SCOPES`.
    """
    if subset is None:
        return None
    if not isinstance(subset, dict):
        raise ValueError(f'subset must be None or dict(size=N, seed=S), got '
                         f'{subset!r}')
    unknown = sorted(set(subset) - set(SUBSET_KEYS))
    if unknown:
        raise ValueError(f'subset: unknown keys {unknown}; accepted: '
                         f'{list(SUBSET_KEYS)}')
    size, seed = subset.get('size'), subset.get('seed', 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f'subset.size must be an int >= 1, got {size!r}')
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f'subset.seed must be an int, got {seed!r}')
    scope = subset.get('scope', 'strong')
    if scope not in SCOPES:
        raise ValueError(f'subset.scope must be one of {list(SCOPES)}, got '
                         f'{scope!r}')
    return dict(size=size, seed=seed, scope=scope)


def clip_uniforms(x: Dict[str, Tensor], seed: int) -> Tensor:
    """One number in [0, 1) per clip from its inputs and ``seed``.

    Args:
        x (dict[str, Tensor]): preprocessed inputs, batch first.
        seed (int): the subsample's seed.

    Returns:
        Tensor: ``[B]`` float64, uniform over clips for a hash.
    """
    names = sorted(x)
    batch = x[names[0]].shape[0]
    out = []
    for i in range(batch):
        h = hashlib.blake2b(str(seed).encode(), digest_size=8)
        for m in names:
            h.update(x[m][i].detach().cpu().contiguous().numpy().tobytes())
        out.append(int.from_bytes(h.digest(), 'little') / 2.0 ** 64)
    return torch.tensor(out, dtype=torch.float64)


def subset_mask(x: Dict[str, Tensor], subset: Optional[dict],
                num_samples: Optional[int]) -> Tensor:
    """``[B]`` bool: the clips of this batch in the subsample.

    Each clip is in with probability ``size / num_samples`` (all clips when
    ``subset`` is None, ``num_samples`` is unknown or not larger than
    ``size``).
    """
    batch = next(iter(x.values())).shape[0]
    if subset is None or not num_samples or num_samples <= subset['size']:
        return torch.ones(batch, dtype=torch.bool)
    fraction = subset['size'] / num_samples
    return clip_uniforms(x, subset['seed']) < fraction
