"""The ``certify`` option of the robust evaluation: keys, checks, defaults.
"""
import math
import numbers
from typing import List, Optional

from crmt_mm.attacks.base import budget_norm

TAU_SOURCES = ('model', 'estimate')
CERTIFY_KEYS = ('radii', 'tau_source', 'tau_data', 'tau_max_batches')
CERTIFICATE_LABEL = (
    'empirical: tau is the largest input-gradient norm of each uni-modal '
    'logit over finitely many samples, a lower estimate of the Lipschitz '
    'constant, so radii and certified accuracies are estimates, not '
    'guarantees (docs/evaluation.md, "Honest labelling")')


def check_certify(certify: Optional[dict],
                  descriptions: List[dict]) -> Optional[dict]:
    """Validate ``certify`` and fill its defaults (None = off).

    The default radii are 0 plus every L2 attack budget in the normalised
    space (from the perturbations' ``describe()``), so CA(R) can be read
    next to the attack accuracy at eps = R.

    Args:
        certify (dict, optional): ``radii``, ``tau_source``, ``tau_data``,
            ``tau_max_batches`` (see ``RobustTestLoop``).
        descriptions (list[dict]): ``describe()`` of every perturbation.

    Returns:
        dict | None: every key set, ``radii`` sorted and deduplicated.

    Raises:
        ValueError: naming the bad key and value.
    """
    if certify is None:
        return None
    if not isinstance(certify, dict):
        raise ValueError(f'certify must be a dict or None, got {certify!r}')
    unknown = sorted(set(certify) - set(CERTIFY_KEYS))
    if unknown:
        raise ValueError(f'certify: unknown keys {unknown}; accepted: '
                         f'{list(CERTIFY_KEYS)}')
    cfg = dict(radii=None, tau_source='model', tau_data='train',
               tau_max_batches=None)
    cfg.update(certify)
    radii = cfg['radii']
    if radii is None:
        radii = [0.0] + [d['budget'] for d in descriptions
                         if budget_norm(d) == 'L2' and
                         d['unit'] == 'normalized' and
                         d['budget'] is not None]
    else:
        if not isinstance(radii, (list, tuple)) or not radii:
            raise ValueError('certify.radii must be a non-empty list of '
                             f'radii >= 0, got {radii!r}')
        for r in radii:
            if isinstance(r, bool) or not isinstance(r, numbers.Real) \
                    or not math.isfinite(r) or r < 0:
                raise ValueError(f'certify.radii: {r!r} is not a finite '
                                 'number >= 0')
    cfg['radii'] = sorted({float(r) for r in radii})
    if cfg['tau_source'] not in TAU_SOURCES:
        raise ValueError(f'certify.tau_source must be one of {TAU_SOURCES}, '
                         f'got {cfg["tau_source"]!r}')
    if cfg['tau_data'] not in ('train', 'self') and \
            not isinstance(cfg['tau_data'], dict):
        raise ValueError("certify.tau_data must be 'train', 'self' or a "
                         f'dataloader config dict, got {cfg["tau_data"]!r}')
    limit = cfg['tau_max_batches']
    if limit is not None and (isinstance(limit, bool) or
                              not isinstance(limit, int) or limit < 1):
        raise ValueError('certify.tau_max_batches must be None or an int '
                         f'>= 1, got {limit!r}')
    return cfg
