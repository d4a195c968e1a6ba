"""Paired bootstrap interval of a difference in accuracy (e.g. CRMT - JT).

Two models evaluated on the same test clips, over the same training seeds,
give per-clip correctness ``a[s, i]`` and ``b[s, i]``. The statistic is the
mean of ``a - b`` over seeds and clips. Its sampling spread comes from two
sources, the training seed and the test clips, so each bootstrap draw
resamples seeds with replacement and, within each drawn seed, clips with
replacement (a two-stage bootstrap, Davison & Hinkley 1997, sec. 3.8); the
pairing (the same clip for both models) is kept, which removes the spread
of clip difficulty shared by the two models. The interval is the percentile
interval of the bootstrap means.
"""
from typing import Dict

import numpy as np


def paired_bootstrap(a, b, n_boot: int = 10000, seed: int = 0,
                     level: float = 0.95) -> Dict[str, float]:
    """Percentile bootstrap interval of ``mean(a - b)``.

    Args:
        a (array-like): ``[S, N]`` (seeds x clips) or ``[N]`` per-clip
            scores of the first model (e.g. 1 = correct under attack).
        b (array-like): the same shape, the second model on the same clips
            and seeds.
        n_boot (int): bootstrap draws. Defaults to 10000.
        seed (int): seed of the draws (numpy ``default_rng``).
            Defaults to 0.
        level (float): coverage of the interval, in (0, 1).
            Defaults to 0.95.

    Returns:
        dict: ``mean`` (the observed mean difference), ``low``, ``high``,
        ``level``, ``n_boot``, ``seed``, ``seeds`` (S) and ``clips`` (N).

    Raises:
        ValueError: shapes differ, are empty or not 1-/2-D, or bad
            ``n_boot``/``level``.

    Example:
        >>> paired_bootstrap(crmt_correct, jt_correct)['low']
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f'a and b must have the same shape, got {a.shape} '
                         f'and {b.shape}')
    if a.ndim == 1:
        a, b = a[None], b[None]
    if a.ndim != 2 or a.size == 0:
        raise ValueError('a and b must be [N] or [S, N] and non-empty, got '
                         f'shape {a.shape}')
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or \
            n_boot < 1:
        raise ValueError(f'n_boot must be an int >= 1, got {n_boot!r}')
    if not 0 < level < 1:
        raise ValueError(f'level must be in (0, 1), got {level!r}')
    d = a - b
    seeds, clips = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2 ** 22 // max(seeds * clips, 1))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        s = rng.integers(0, seeds, size=(k, seeds))
        i = rng.integers(0, clips, size=(k, seeds, clips))
        means[start:start + k] = d[s[:, :, None], i].mean(axis=(1, 2))
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return dict(mean=float(d.mean()), low=float(low), high=float(high),
                level=level, n_boot=n_boot, seed=seed, seeds=seeds,
                clips=clips)
