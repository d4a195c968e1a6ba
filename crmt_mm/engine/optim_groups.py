"""The optimizer param groups of CRMT step 2 (the integration weights a).

One owner for every param-group change of the phase switch: which groups
hold ``a``, their step-2 lr, momentum and weight decay, and the reset of
their optimizer state. :class:`~crmt_mm.engine.CRMTPhaseSwitchHook` calls
it at the switch (and every step-2 epoch with ``reset_momentum='epoch'``).
"""
from typing import Iterable, List, Optional

from torch import nn
from torch.optim import Optimizer

#: ``paramwise_cfg`` tag of the group of the integration weights, e.g.
#: ``custom_keys={'head.integration': dict(crmt_group='integration')}``.
GROUP_TAG = ('crmt_group', 'integration')


def integration_groups(optimizer: Optimizer,
                       params: Iterable[nn.Parameter]) -> List[dict]:
    """The param groups of ``optimizer`` that hold the integration weights.

    Groups tagged ``crmt_group='integration'`` if there are any, else every
    group that contains one of ``params``.

    Args:
        optimizer (Optimizer): the runner's optimizer.
        params (Iterable[nn.Parameter]): the integration weights.

    Returns:
        list[dict]: the groups, in optimizer order.

    Raises:
        RuntimeError: no group holds them.
    """
    key, value = GROUP_TAG
    targets = set(map(id, params))
    groups = [g for g in optimizer.param_groups if g.get(key) == value] or [
        g for g in optimizer.param_groups
        if any(id(p) in targets for p in g['params'])]
    if not groups:
        raise RuntimeError(
            'no optimizer param group holds the integration weights; were '
            'they frozen before the optimizer was built?')
    return groups


def configure_phase2_groups(optimizer: Optimizer,
                            params: Iterable[nn.Parameter],
                            lr_factor: Optional[float], momentum: float,
                            weight_decay: float) -> List[dict]:
    """Give the integration weights' groups their step-2 settings.

    Sets ``lr = lr_factor * initial_lr`` (``initial_lr`` is the configured
    base lr that mmengine's parameter schedulers record, so step-2 lr does
    not depend on where a step-1 schedule ended), ``momentum`` (for
    optimizers that have one) and ``weight_decay``, and clears the
    optimizer state (momentum buffers, Adam moments) of those parameters,
    so step 2 starts from rest. With ``lr_factor=None`` only the state is
    cleared (the reference re-creates its optimizer every step-2 epoch).

    Args:
        optimizer (Optimizer): the runner's optimizer.
        params (Iterable[nn.Parameter]): the integration weights.
        lr_factor (float, optional): step-2 lr over the base lr; None keeps
            lr, momentum and weight decay as they are.
        momentum (float): step-2 momentum (ignored without ``lr_factor``).
        weight_decay (float): step-2 weight decay (ignored without
            ``lr_factor``).

    Returns:
        list[dict]: the changed groups.
    """
    groups = integration_groups(optimizer, params)
    for group in groups:
        if lr_factor is not None:
            base = group.get('initial_lr', optimizer.defaults['lr'])
            group['lr'] = lr_factor * base
            if 'momentum' in group:
                group['momentum'] = momentum
            group['weight_decay'] = weight_decay
        for p in group['params']:
            optimizer.state.pop(p, None)
    return groups


__all__ = ['GROUP_TAG', 'integration_groups', 'configure_phase2_groups']
