"""Build perturbations from plain config dicts and check them against a model.

Kept free of mmengine registries so :mod:`crmt_mm.attacks` stays plain
torch; the evaluation loop passes its ``attacks=[...]`` config list here.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Dict, List, Sequence, Union

from .apgd import APGD
from .autoattack import MultiModalAutoAttack
from .base import Perturbation, UnknownModalityError, entry_error
from .fgm import MultiModalFGM, PerModalityFGM, UniModalFGM
from .l2_attack import L2GradientAttack
from .missing import MissingModality
from .noise import GaussianNoise
from .pgd import MultiModalPGD, PerModalityPGD, UniModalPGD
from .square import Square
from .worst_case import WorstCase

#: Config ``type`` -> class.
PERTURBATION_TYPES: Dict[str, type] = {
    cls.__name__: cls for cls in (
        MultiModalFGM, UniModalFGM, PerModalityFGM, MultiModalPGD,
        UniModalPGD, PerModalityPGD, MissingModality, GaussianNoise,
        WorstCase, APGD, Square, MultiModalAutoAttack)
}

#: Keys whose list value expands into one perturbation per element.
SWEEP_KEYS = ('eps', 'sigma')

Config = Union[Mapping, Perturbation]


def build_perturbations(cfgs: Union[Config, Sequence[Config]],
                        where: str = 'perturbations') -> List[Perturbation]:
    """Build a list of perturbations from config dicts.

    Each dict has a ``type`` (a class name of :mod:`crmt_mm.attacks`) and
    that class's arguments. A list-valued ``eps`` or ``sigma`` expands into
    one perturbation per value (a curve). ``name`` overrides the default
    name: a string for a single value, or a list with one name per value.
    Ready :class:`Perturbation` objects pass through.

    Default names: ``pgd_audio@0.5``, ``fgm_audio@0.5``, ``pgd_joint@0.2``,
    ``pgd_visual@0.1+audio@0.5`` (per-modality), ``missing_audio`` /
    ``missing_audio_feat``, ``noise_audio@0.1`` / ``noise_all@0.1``,
    ``worst_audio@0.5``, ``apgd-ce_audio@0.5`` / ``apgd-dlr_...`` /
    ``apgd-t_...`` (``APGD``), ``square_audio@0.5`` (``Square``),
    ``aa-standard_audio@0.5`` / ``aa-fast_...`` / ``aa-reference_...``
    (``MultiModalAutoAttack``); ``_linf`` is appended for ``norm='Linf'``
    and ``_raw`` for ``eps_unit='raw'``. An ``eps`` list of an ensemble
    gives one ensemble per budget; :func:`~.autoattack.nested_sweep` runs
    such a group as one nested, survivor-only sweep.

    ``WorstCase`` takes ``perturbations`` (member configs), or ``modality``
    (None = joint) to default to FGM + PGD; a top-level ``eps`` is given to
    every FGM/PGD member that has none.

    Args:
        cfgs (dict | Perturbation | list): one config or a list of them.
        where (str): the config key of the list, for messages. Defaults to
            ``'perturbations'``.

    Returns:
        list[Perturbation]: in config order, expansions in value order.

    Raises:
        ValueError: unknown ``type`` (lists the known ones), invalid or
            unknown arguments (naming the value), duplicate names; the
            first three name the entry (``<where>[i] (type, modality)``).

    Example:
        >>> attacks = build_perturbations([
        ...     dict(type='UniModalPGD', modality='audio', eps=[0.5, 1.0]),
        ...     dict(type='MissingModality', modality='audio'),
        ...     dict(type='WorstCase', modality='audio', eps=0.5)])
        >>> [a.name for a in attacks]
        ['pgd_audio@0.5', 'pgd_audio@1.0', 'missing_audio', 'worst_audio@0.5']
    """
    if isinstance(cfgs, (Mapping, Perturbation)):
        cfgs = [cfgs]
    if not isinstance(cfgs, (list, tuple)):
        raise ValueError(
            f'expected a list of perturbation configs, got {cfgs!r}')
    out: List[Perturbation] = []
    for index, cfg in enumerate(cfgs):
        try:
            out.extend(_build(cfg))
        except ValueError as err:
            raise entry_error(err, f'{where}[{index}]', cfg) from err
    names = [p.name for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f'duplicate perturbation names {dup}; set `name` '
                         'to tell them apart')
    return out


def check_modalities(perturbations: Sequence[Perturbation],
                     modalities: Sequence[str]) -> None:
    """Check every perturbation only names modalities the model has.

    Call it before the first evaluation so a misspelled modality fails at
    build time, not after the first batch.

    Args:
        perturbations (Sequence[Perturbation]): e.g. from
            :func:`build_perturbations`.
        modalities (Sequence[str]): the model's ``modalities`` tuple.

    Raises:
        UnknownModalityError: (a ``KeyError`` and ``ValueError``) naming the
            perturbation, the modality and the available ones.
    """
    available = tuple(modalities)
    for p in perturbations:
        for m in p.modalities or ():
            if m not in available:
                raise UnknownModalityError(
                    f'perturbation {p.name!r} uses modality {m!r}, but the '
                    f'model has modalities {available}')


def _build(cfg: Config) -> List[Perturbation]:
    if isinstance(cfg, Perturbation):
        return [cfg]
    if not isinstance(cfg, Mapping):
        raise ValueError(f'a perturbation config must be a dict, got {cfg!r}')
    cfg = dict(cfg)  # never modify the caller's config
    kind = cfg.pop('type', None)
    if not isinstance(kind, str) or kind not in PERTURBATION_TYPES:
        raise ValueError(f'unknown perturbation type {kind!r} in {cfg}; '
                         f'known types: {sorted(PERTURBATION_TYPES)}')
    cls = PERTURBATION_TYPES[kind]
    key = next((k for k in SWEEP_KEYS if k in cfg), None)
    values = [None] if key is None else cfg.pop(key)
    if not isinstance(values, (list, tuple)):
        values = [values]
    if not values:
        raise ValueError(f'{kind}: empty {key} list')
    names = _names(cfg.pop('name', None), len(values), kind)
    out = []
    for value, name in zip(values, names):
        kwargs = dict(cfg, name=name)
        if key is not None:
            kwargs[key] = value
        out.append(_worst_case(kwargs) if cls is WorstCase
                   else _construct(cls, kwargs))
    return out


def _names(name, n: int, kind: str) -> list:
    if name is None or isinstance(name, str):
        if isinstance(name, str) and n > 1:
            raise ValueError(
                f'{kind}: name {name!r} would be shared by {n} budgets; give '
                'a list of names or none')
        return [name] * n
    if not isinstance(name, (list, tuple)) or len(name) != n:
        raise ValueError(
            f'{kind}: name must be a string or a list of {n} names, got '
            f'{name!r}')
    return list(name)


def _construct(cls: type, kwargs: dict) -> Perturbation:
    try:
        return cls(**kwargs)
    except TypeError as err:  # unknown or missing argument
        params = [p for p in inspect.signature(cls).parameters]
        raise ValueError(f'{cls.__name__}: bad arguments {sorted(kwargs)} '
                         f'({err}); accepted: {params}') from err


def _worst_case(kwargs: dict) -> WorstCase:
    name = kwargs.pop('name', None)
    members = kwargs.pop('perturbations', None)
    modality = kwargs.pop('modality', None)
    eps = kwargs.pop('eps', None)
    if kwargs:
        raise ValueError(
            f'WorstCase: unknown arguments {sorted(kwargs)}; accepted: '
            "['perturbations', 'modality', 'eps', 'name']")
    if members is None:
        if eps is None:
            raise ValueError('WorstCase needs `perturbations` or `eps`')
        kinds = ('UniModalFGM', 'UniModalPGD') if modality is not None \
            else ('MultiModalFGM', 'MultiModalPGD')
        members = [dict(type=k) if modality is None
                   else dict(type=k, modality=modality) for k in kinds]
    elif modality is not None:
        raise ValueError('WorstCase: `modality` only selects the default '
                         'members; set it in each member config instead')
    if not isinstance(members, (list, tuple)):
        raise ValueError(
            f'WorstCase: perturbations must be a list, got {members!r}')
    built = []
    for member in members:
        if isinstance(member, Mapping) and eps is not None \
                and 'eps' not in member and issubclass(
                    PERTURBATION_TYPES.get(member.get('type'), object),
                    L2GradientAttack):
            member = dict(member, eps=eps)
        built.extend(_build(member))
    return WorstCase(built, name=name)
