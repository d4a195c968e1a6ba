"""Input spaces and the perturbation contract shared by every attack.

Everything in :mod:`crmt_mm.attacks` is plain torch (no mmengine or mmaction
import) so that the attacks can be tested, reused and reasoned about without
the framework. The evaluation protocol they implement is described in
``docs/evaluation.md``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

#: ``forward(x, drop=()) -> [B, K]`` fused logits for a modality-name dict.
ForwardFn = Callable[..., Tensor]
#: ``{modality: InputSpace or None}`` as provided by the model.
Spaces = Optional[Mapping[str, Optional['InputSpace']]]


class UnknownModalityError(KeyError, ValueError):
    """A configured modality is not among the available ones.

    Subclasses both :class:`KeyError` (a dict lookup failed) and
    :class:`ValueError` (a config value is invalid), so callers can catch
    whichever they expect. ``str()`` gives the plain message (a bare
    ``KeyError`` would print it quoted).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''


def entry_error(err: Exception, where: str, cfg) -> Exception:
    """``err`` re-made to name the config entry it came from.

    A value check deep in a perturbation or certifier names the value
    (``sigma must be > 0, got -0.5``) but not which of the dozen entries
    of ``test_cfg.perturbations`` or ``smoothing`` holds it; the builders
    prefix the entry's position, type and modality.

    Args:
        err (Exception): the error (its type is kept, so handlers for
            ``ValueError``/``TypeError``/:class:`UnknownModalityError` still
            catch it).
        where (str): the entry's position, e.g.
            ``'test_cfg (RobustTestLoop).perturbations[12]'``.
        cfg: the entry's config (a dict or anything else).

    Returns:
        Exception: to raise ``from err``.

    Example:
        >>> raise entry_error(err, 'smoothing[0]', entry) from err
        ValueError: smoothing[0] (GaussianSmoothingCertifier, modality
        'audio'): sigma must be a finite number > 0, got -0.5
    """
    label = where
    if isinstance(cfg, Mapping):
        parts = [str(cfg.get('type', 'no type'))]
        if 'modality' in cfg:
            parts.append(f'modality {cfg["modality"]!r}')
        label = f'{where} ({", ".join(parts)})'
    message = f'{label}: {err}'
    try:
        return type(err)(message)
    except Exception:  # an error type with another constructor
        return ValueError(message)


def require_modalities(x: Mapping[str, Tensor], modalities: Iterable[str],
                       who: str) -> None:
    """Raise :class:`UnknownModalityError` if a modality is missing from x.

    Args:
        x (Mapping[str, Tensor]): the modality-name dict given to an attack.
        modalities (Iterable[str]): the modalities ``who`` needs.
        who (str): name of the perturbation, for the message.
    """
    for m in modalities:
        if m not in x:
            raise UnknownModalityError(
                f'{who}: modality {m!r} is not in the inputs; available '
                f'modalities: {tuple(x)}')


def check_labels(x: Mapping[str, Tensor], y: Tensor) -> None:
    """Check that ``y`` is ``[B]`` and every modality tensor has batch B."""
    if not isinstance(y, Tensor) or y.dim() != 1:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f'labels must be a 1-D LongTensor [B], got {shape}')
    for m, t in x.items():
        if t.dim() < 1 or t.shape[0] != y.shape[0]:
            raise ValueError(
                f'modality {m!r} has shape {tuple(t.shape)}, but the labels '
                f'have batch size {y.shape[0]}')


def per_sample(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector ``[B]`` to broadcast against ``like``.

    Works at any rank (``[B, 1, C, T, H, W]`` video as well as 4-D images),
    unlike the ``view(-1, 1, 1, 1)`` idiom that silently mis-broadcasts on
    5-D and 6-D tensors.
    """
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def sq_norm(t: Tensor) -> Tensor:
    """Per-sample squared L2 norm over all non-batch dims, ``[B, ...] -> [B]``.
    """
    return t.reshape(t.shape[0], -1).pow(2).sum(dim=1)


def check_nonneg(value, what: str) -> float:
    """Return ``value`` as a float if it is a finite real >= 0, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f'{what} must be a finite number >= 0, got {value!r}')
    return float(value)


def check_positive_int(value, what: str) -> int:
    """Return ``value`` if it is an int >= 1 (bools rejected), else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < 1:
        raise ValueError(f'{what} must be an integer >= 1, got {value!r}')
    return int(value)


def check_modality_name(value, what: str = 'modality') -> str:
    """Return ``value`` if it is a non-empty string, else raise."""
    if not isinstance(value, str) or not value:
        raise ValueError(f'{what} must be a non-empty string, got {value!r}')
    return value


#: Human-readable space of each budget unit, logged with every result.
BUDGET_SPACE = {
    'normalized': 'normalised input space (after the data preprocessor); '
                  "L2 budgets are per-sample norms over each modality's "
                  'whole tensor, Linf budgets per-element bounds',
    'raw': 'raw input units (before normalisation, e.g. 0..255 pixels); '
           'the attack optimises u = delta * std',
}

#: Keys of :meth:`Perturbation.describe` (``docs/design.md``).
DESCRIPTION_KEYS = ('name', 'type', 'kind', 'modalities', 'label', 'curve',
                    'budget', 'unit', 'settings')


def format_value(v: float) -> str:
    """Budget as it appears in names: ``repr`` of the float (``0.5``, ``1.0``).

    ``repr`` round-trips, so two different budgets never share a name.
    """
    return repr(float(v))


def _as_tensor(value, what: str) -> Optional[Tensor]:
    if value is None:
        return None
    if isinstance(value, Tensor):
        t = value.detach()
        # Integer statistics would make (x - mean) / std integer division.
        return t if t.is_floating_point() else t.to(torch.get_default_dtype())
    try:
        return torch.as_tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f'{what} must be a number or tensor, got {value!r}') \
            from err


@dataclass(frozen=True, eq=False)
class InputSpace:
    """How one modality's normalised tensor relates to its raw values.

    The model sees ``x = (raw - mean) / std``; the attacks work on ``x``
    (budgets in the normalised space, ``docs/evaluation.md``) and use this
    description to clamp to the valid raw range and, with
    ``eps_unit='raw'``, to measure budgets in raw units.

    Note:
        ``mean`` and ``std`` must broadcast against the modality tensor, e.g.
        shape ``[1, 1, 3, 1, 1, 1]`` for visual ``[B, 1, 3, T, H, W]``; a
        flat 3-vector would broadcast against W instead of C. ``std`` must be
        > 0, so clamping in normalised space to ``normalized_bounds()`` is
        exactly "un-normalise, clamp to ``[lo, hi]``, re-normalise".

    Args:
        mean (Tensor | float, optional): raw-unit mean subtracted by the data
            preprocessor. None means 0. Defaults to None.
        std (Tensor | float, optional): raw-unit std divided by the data
            preprocessor, > 0. None means 1. Defaults to None.
        lo (Tensor | float, optional): smallest valid raw value (0 for
            images). None means unbounded below. Defaults to None.
        hi (Tensor | float, optional): largest valid raw value (255 for
            images in mmaction2 units). None means unbounded above.
            Defaults to None.

    Example:
        >>> shape = (1, 1, 3, 1, 1, 1)
        >>> visual = InputSpace(
        ...     mean=torch.tensor([123.675, 116.28, 103.53]).view(shape),
        ...     std=torch.tensor([58.395, 57.12, 57.375]).view(shape),
        ...     lo=0., hi=255.)
        >>> spaces = dict(visual=visual, audio=None)  # audio: never clamped
    """

    mean: Optional[Tensor] = None
    std: Optional[Tensor] = None
    lo: Optional[Tensor] = None
    hi: Optional[Tensor] = None

    def __post_init__(self):
        # frozen dataclass: normalise the fields through object.__setattr__.
        for field in ('mean', 'std', 'lo', 'hi'):
            object.__setattr__(self, field,
                               _as_tensor(getattr(self, field), field))
        if self.std is not None and not bool((self.std > 0).all()):
            raise ValueError(f'InputSpace std must be > 0, got {self.std}')
        if self.lo is not None and self.hi is not None \
                and not bool((self.lo < self.hi).all()):
            raise ValueError(
                f'InputSpace needs lo < hi, got lo={self.lo}, hi={self.hi}')

    @property
    def bounded(self) -> bool:
        """True if the raw range is bounded on at least one side."""
        return self.lo is not None or self.hi is not None

    def normalized_bounds(self) -> Optional[Tuple[Tensor, Tensor]]:
        """Valid range in the normalised space, or None if unbounded.

        Returns:
            tuple[Tensor, Tensor] | None: ``((lo - mean) / std,
            (hi - mean) / std)``, broadcastable to the modality tensor; a
            missing side is ``-inf`` / ``+inf``.
        """
        if not self.bounded:
            return None
        mean = self.mean if self.mean is not None else torch.zeros(())
        std = self.std if self.std is not None else torch.ones(())
        lo = self.lo if self.lo is not None else torch.tensor(-math.inf)
        hi = self.hi if self.hi is not None else torch.tensor(math.inf)
        # std > 0 keeps the order and maps -inf/+inf to themselves.
        return (lo - mean) / std, (hi - mean) / std

    def clamp(self, x: Tensor) -> Tensor:
        """Clamp a normalised tensor to :meth:`normalized_bounds` (if any)."""
        bounds = self.normalized_bounds()
        if bounds is None:
            return x
        lo, hi = (b.to(device=x.device, dtype=x.dtype) for b in bounds)
        return torch.clamp(x, min=lo, max=hi)


def space_of(spaces: Spaces, modality: str) -> Optional[InputSpace]:
    """The :class:`InputSpace` of ``modality`` (None if not described)."""
    if spaces is None:
        return None
    space = spaces.get(modality)
    if space is not None and not isinstance(space, InputSpace):
        raise ValueError(
            f'spaces[{modality!r}] must be an InputSpace or None, got '
            f'{type(space).__name__}')
    return space


class Perturbation:
    """Base class of every perturbation used by the robust evaluation.

    Contract (``docs/design.md``): ``x`` is a dict ``{modality: Tensor}`` of
    normalised inputs of any rank with batch first, ``y`` a LongTensor
    ``[B]`` and ``forward(x, drop=()) -> [B, K]`` returns fused logits
    (``drop`` names modalities whose contribution is zeroed).
    Implementations never change the model's mode, parameters or buffers,
    never write parameter ``.grad`` and never modify ``x`` in place.

    Subclasses implement :meth:`perturb` and :meth:`default_name`; ``name``
    (e.g. ``'pgd_audio@0.5'``) keys the results of the evaluation.

    Args:
        name (str, optional): overrides :meth:`default_name`.
            Defaults to None.
    """

    #: False when the perturbation acts inside the model (feature zeroing)
    #: and has no input-space equivalent: only :meth:`predict` is meaningful.
    acts_on_inputs: bool = True

    def __init__(self, name: Optional[str] = None):
        if name is not None:
            check_modality_name(name, 'name')
        self._name = name

    @property
    def name(self) -> str:
        """Result key, e.g. ``'pgd_audio@0.5'``."""
        return self._name if self._name is not None else self.default_name()

    def default_name(self) -> str:
        """Name derived from the arguments (used when ``name`` is None)."""
        raise NotImplementedError

    @property
    def modalities(self) -> Optional[Tuple[str, ...]]:
        """Modalities this perturbation needs; None = whatever ``x`` holds."""
        return None

    def perturb(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Dict[str, Tensor]:
        """Return perturbed inputs with the same keys as ``x``.

        Unperturbed modalities are returned as the same tensor objects.

        Args:
            forward (callable): ``forward(x, drop=()) -> [B, K]`` logits.
            x (dict[str, Tensor]): normalised inputs, batch first.
            y (Tensor): labels, LongTensor ``[B]``.
            spaces (dict[str, InputSpace | None], optional): per-modality
                input spaces for clamping and raw units. Defaults to None.

        Returns:
            dict[str, Tensor]: a new dict; ``x`` is not modified.
        """
        raise NotImplementedError

    def predict(self, forward: ForwardFn, x: Dict[str, Tensor], y: Tensor,
                spaces: Spaces = None) -> Tensor:
        """Fused logits ``[B, K]`` under the perturbation.

        Runs under the caller's grad mode (the evaluation loop's
        ``no_grad``). Defaults to ``forward(self.perturb(forward, x, y))``.
        """
        return forward(self.perturb(forward, x, y, spaces))

    def describe(self) -> dict:
        """JSON-able description, logged with the result of this perturbation.

        The robust evaluation reports it as is and groups results into
        accuracy-vs-budget curves with it. Keys (:data:`DESCRIPTION_KEYS`,
        plus ``group`` when there is a curve):

        * ``name``: the result key, e.g. ``'pgd_audio@0.5'``;
        * ``type``: the class name, e.g. ``'UniModalPGD'``;
        * ``kind``: ``'pgd'``, ``'fgm'``, ``'missing'``, ``'noise'``,
          ``'worst'`` or any other string for a new family (``'other'`` by
          default); only ``'fgm'``/``'pgd'``/``'worst'`` with a normalised
          budget feed the default certified radii and the certificate check;
        * ``modalities``: list of perturbed modalities (None = every one);
        * ``label``: the budget target in names, e.g. ``'audio'``,
          ``'joint'``, ``'all'`` (None if none);
        * ``curve``: the accuracy-vs-budget curve it is a point of, e.g.
          ``'pgd_audio'`` (None if none), at abscissa ``budget`` (eps or
          sigma, a float) in ``unit`` (``'normalized'``, ``'raw'`` or None);
        * ``group``: the plot panel, the single perturbed modality or
          ``'joint'`` (only with a curve);
        * ``settings``: everything else needed to reproduce it (eps,
          steps, step size, random start, restarts, seed, clamp, space,
          ...); for L2 attacks ``settings['eps']`` is the budget (a float or
          ``{modality: eps}``).

        Subclasses override it and build the dict with :func:`description`;
        this default describes an unknown kind by its ``repr``.
        """
        return description(self, settings=dict(repr=repr(self)))

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name={self.name!r})'


def budget_norm(desc: dict) -> Optional[str]:
    """Threat model of a :meth:`Perturbation.describe` dict: ``'L2'`` or
    ``'Linf'`` for a budgeted attack (``settings['norm']``), else None."""
    return desc['settings'].get('norm') if desc['settings'].get(
        'eps') is not None or desc['kind'] == 'worst' else None


def norm_suffix(norm: Optional[str], unit: Optional[str]) -> str:
    """Name suffix of a budget: ``'_linf'`` for L-inf, then ``'_raw'`` for
    raw units (L2 in normalised units has none)."""
    return ('_linf' if norm == 'Linf' else '') + \
        ('_raw' if unit == 'raw' else '')


def description(p: Perturbation, **fields) -> dict:
    """The :meth:`Perturbation.describe` dict of ``p`` with ``fields`` set.

    Fills ``name``, ``type`` and ``modalities`` from ``p``, every other key
    of :data:`DESCRIPTION_KEYS` with its empty value, and ``group`` (the
    plot panel) when ``curve`` is set.
    """
    unknown = sorted(set(fields) - set(DESCRIPTION_KEYS))
    if unknown:
        raise ValueError(f'unknown description keys {unknown}; accepted: '
                         f'{list(DESCRIPTION_KEYS)}')
    desc = dict(name=p.name, type=type(p).__name__, kind='other',
                modalities=None if p.modalities is None
                else list(p.modalities), label=None, curve=None,
                budget=None, unit=None, settings={})
    desc.update(fields)
    if desc['curve'] is not None:
        mods = desc['modalities']
        desc['group'] = mods[0] if mods and len(mods) == 1 else 'joint'
    return desc


def unique(values: Sequence[str], what: str) -> Tuple[str, ...]:
    """Return ``values`` as a tuple of names, rejecting duplicates."""
    out = tuple(check_modality_name(v, what) for v in values)
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise ValueError(f'duplicate {what} {dup} in {list(values)}')
    return out
