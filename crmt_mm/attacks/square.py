"""Square attack over a dict of modalities: score-based, L2 or L∞.

Square (Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020,
arXiv 1912.00049) uses only the model's logits: random square-window
updates at the budget's boundary, each kept only if it lowers the margin
``z_y - max_{i != y} z_i``. Because it needs no gradient, it is the check
that gradients are not masked: a point it breaks but every gradient attack
missed is a warning sign. The schedules below follow the paper; the public
``fra31/auto-attack`` implementation was read for the constants (p_init 0.8
and the query-count schedule of the window size).

The "image" of a modality tensor ``[B, *lead, H, W]`` is its **last two
axes**: ``H x W`` frames for video ``[B, N, C, T, H, W]``, the frequency x
time plane for spectrograms ``[B, N, 1, F, M]``. Every leading axis
(clips N, channels C, frames T) is a "channel": one window position is drawn
per sample and iteration and shared by all frames and channels (a square
that is fixed in space across time), while the update values are drawn
independently per channel and frame, exactly as the original draws them per
colour channel. This keeps the window-size schedule that of one image and
lets each frame move independently. A 2-D tensor ``[B, D]`` is a 1 x D image.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from .ball_attack import BallAttack, Geometry, budget_mode
from .balls import GRAD_NORM_GUARD
from .base import ForwardFn, check_positive_int, per_sample
from .losses import margin

#: Query milestones (per 10,000 queries) at which the window fraction p
#: halves, as in the paper's schedule.
P_MILESTONES = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_fraction(p_init: float, i: int, queries: int) -> float:
    """Fraction p of the image a window covers at iteration ``i``."""
    it = int(i / queries * 10000)
    return p_init / 2 ** sum(it > m for m in P_MILESTONES)


def _as_image(t: Tensor) -> Tensor:
    """``[n, *lead, H, W] -> [n, C, H, W]`` (C = prod(lead)); ``[n, D]`` is
    ``[n, 1, 1, D]``."""
    if t.dim() == 2:
        return t[:, None, None, :]
    if t.dim() == 3:
        return t[:, None]
    return t.reshape(t.shape[0], -1, t.shape[-2], t.shape[-1])


def pyramid(h: int, w: int, device=None) -> Tensor:
    """``[h, w]`` sum of concentric rectangles with weight 1 / (r + 1)^2."""
    if h == 0 or w == 0:
        return torch.zeros(h, w, device=device)
    i = (torch.arange(h, device=device) - h // 2).abs()
    j = (torch.arange(w, device=device) - w // 2).abs()
    dist = torch.maximum(i[:, None], j[None, :])
    radii = torch.arange(max(h // 2 + 1, w // 2 + 1), device=device)
    weights = 1.0 / (radii + 1.0) ** 2
    return ((radii[None, None, :] >= dist[..., None]) * weights).sum(-1)


def blob(h: int, w: int, device=None) -> Tensor:
    """The L2 update pattern: a positive pyramid over the top half and a
    negative one over the bottom half, unit L2 norm, ``[h, w]``."""
    out = torch.cat([pyramid(h // 2, w, device),
                     -pyramid(h - h // 2, w, device)])
    return out / out.norm().clamp_min(GRAD_NORM_GUARD)


def _place(pattern: Tensor, shape, vh: Tensor, vw: Tensor) -> Tensor:
    """Per-sample copies of ``pattern`` ``[n, h, w]`` at offsets (vh, vw) in
    a zero ``[n, 1, H, W]`` map."""
    h, w = pattern.shape[-2:]
    H, W = shape
    hh = torch.arange(H, device=vh.device)[None, :, None] - vh[:, None, None]
    ww = torch.arange(W, device=vw.device)[None, None, :] - vw[:, None, None]
    inside = (hh >= 0) & (hh < h) & (ww >= 0) & (ww < w)
    n = torch.arange(vh.shape[0], device=vh.device)[:, None, None]
    vals = pattern[n, hh.clamp(0, h - 1), ww.clamp(0, w - 1)]
    return (vals * inside)[:, None]


class Square(BallAttack):
    """Square attack (score-based random search), L2 or L∞, untargeted.

    Per sample: start at the boundary (L∞: vertical stripes ±ε per channel;
    L2: a grid of pyramids with random signs, scaled to ε), then up to
    ``queries - 1`` iterations, each proposing one random window per
    attacked modality (see the module docstring for the axes) and keeping
    the proposal only if the margin ``z_y - max_{i != y} z_i`` decreases.
    A sample stops once misclassified. L∞ sets the window to ±ε per channel
    and frame; L2 moves the mass of a second window into the first one,
    adds a pyramid pattern with a random sign and rescales the ball back to
    ε. Proposals are clamped to the valid range.

    Random draws (windows, signs) are made for the whole batch every
    iteration and then indexed, so a sample's result is independent of the
    other samples attacked with it.

    Args:
        eps (float | dict): the budget: a float for one ball (uni-modal
            with ``modality``, else joint), or ``{modality: eps}``.
        modality (str, optional): the attacked modality. Defaults to None.
        modalities (Sequence[str], optional): modalities of a joint budget;
            None = every modality of the input. Defaults to None.
        norm (str): ``'L2'`` or ``'Linf'``. Defaults to ``'L2'``.
        queries (int): forward passes per sample, the initial one included.
            Defaults to 5000.
        p_init (float): initial window fraction of the image, in (0, 1].
            Defaults to 0.8.
        seed (int): seed of the random search (re-seeded every call).
            Defaults to 0.
        clamp (bool): clamp to the ``InputSpace`` bounds. Defaults to True.
        eps_unit (str): ``'normalized'`` or ``'raw'``.
            Defaults to ``'normalized'``.
        name (str, optional): overrides e.g. ``'square_audio@0.5'``.
            Defaults to None.

    Example:
        >>> dict(type='Square', modality='audio', eps=[0.5, 1.0], queries=1000)
    """

    def __init__(self, eps: Union[float, Mapping[str, float]],
                 modality: Optional[str] = None,
                 modalities: Optional[Sequence[str]] = None,
                 norm: str = 'L2', queries: int = 5000, p_init: float = 0.8,
                 seed: int = 0, clamp: bool = True,
                 eps_unit: str = 'normalized', name: Optional[str] = None):
        budgets, label = budget_mode(eps, modality, modalities)
        super().__init__(budgets, kind='square', label=label, norm=norm,
                         seed=seed, clamp=clamp, eps_unit=eps_unit,
                         name=name)
        self.queries = check_positive_int(queries, 'queries')
        if isinstance(p_init, bool) or not isinstance(
                p_init, (int, float)) or not 0 < p_init <= 1:
            raise ValueError(f'p_init must be in (0, 1], got {p_init!r}')
        self.p_init = float(p_init)

    def settings(self) -> dict:
        return dict(queries=self.queries, p_init=self.p_init,
                    losses=['margin'], targeted=False, steps=None,
                    restarts=1, image_axes='last two axes (H x W, F x M); '
                    'window shared over leading axes, values per channel '
                    'and frame')

    # ---- random draws (whole batch, then indexed) -------------------------

    def _randint(self, geo: Geometry, high: int, index: Tensor) -> Tensor:
        return torch.randint(0, high, (geo.batch_size,),
                             generator=geo.generator,
                             device=index.device)[index]

    def _signs(self, geo: Geometry, shape, index: Tensor, like: Tensor):
        s = torch.randint(0, 2, (geo.batch_size,) + tuple(shape),
                          generator=geo.generator, device=like.device)
        return (2 * s - 1).to(like.dtype)[index]

    # ---- the attack -------------------------------------------------------

    def search(self, forward: ForwardFn, geo: Geometry, y: Tensor,
               index: Tensor) -> Dict[str, Tensor]:
        xs, ys = geo.take(index), y[index]
        u = self._init(geo, xs, index)
        with torch.no_grad():
            best = margin(forward(geo.inputs(xs, u)), ys)
        for i in range(1, self.queries):
            todo = torch.nonzero(best > 0).flatten()
            if todo.numel() == 0:
                break
            sub = {m: t[todo] for m, t in xs.items()}
            # Draws for the whole batch, kept for the samples still robust.
            cand = self._propose(geo, sub, {m: t[todo] for m, t in u.items()},
                                 i, index[todo])
            with torch.no_grad():
                new = margin(forward(geo.inputs(sub, cand)), ys[todo])
            keep = new < best[todo]
            take = todo[keep]
            for m in u:
                u[m] = u[m].index_copy(0, take, cand[m][keep])
            best = best.index_copy(0, take, new[keep])
        return u

    def _init(self, geo: Geometry, xs, index):
        u = {}
        for b in geo.balls:
            for m in b.modalities:
                img = _as_image(geo.clean[m][index])
                n, C, H, W = img.shape
                if self.norm == 'Linf':
                    d = b.eps * self._signs(geo, (C, 1, W), index, img)
                    d = d.expand(n, C, H, W)
                else:
                    ch, cw = max(H // 5, 1), max(W // 5, 1)
                    cells = self._signs(geo, (C, H // ch, W // cw), index,
                                        img)
                    tile = pyramid(ch, cw, img.device).repeat(H // ch,
                                                              W // cw)
                    d = torch.zeros_like(img)
                    d[..., :tile.shape[0], :tile.shape[1]] = tile * cells \
                        .repeat_interleave(ch, -2).repeat_interleave(cw, -1)
                u[m] = d.reshape(geo.clean[m][index].shape)
            if self.norm == 'L2':
                u.update(b.to_boundary(u))
        return geo.clamp(xs, u)

    def _propose(self, geo: Geometry, xs, u, i: int, index):
        p = window_fraction(self.p_init, i, self.queries)
        out = {}
        for b in geo.balls:
            left = None
            if self.norm == 'L2':  # budget not used yet (after clamping)
                left = (b.eps ** 2 - b.norm(u) ** 2).clamp_min(0)
                left = left / sum(_as_image(u[m]).shape[1]
                                  for m in b.modalities)
            for m in b.modalities:
                img = _as_image(u[m])
                n, C, H, W = img.shape
                if self.norm == 'Linf':
                    s = max(int(round(math.sqrt(p * H * W))), 1)
                else:
                    s = max(int(round(math.sqrt(p * H * W))), 3)
                    s += 1 - s % 2  # odd, so the pyramid has a centre
                sh, sw = min(s, H), min(s, W)
                vh = self._randint(geo, H - sh + 1, index)
                vw = self._randint(geo, W - sw + 1, index)
                ones = torch.ones(n, sh, sw, device=img.device,
                                  dtype=img.dtype)
                win = _place(ones, (H, W), vh, vw)
                if self.norm == 'Linf':
                    signs = self._signs(geo, (C, 1, 1), index, img)
                    new = torch.where(win > 0, b.eps * signs, img)
                else:
                    new = self._l2_update(geo, img, win, (vh, vw), (sh, sw),
                                          left, index)
                out[m] = new.reshape(u[m].shape)
            if self.norm == 'L2':
                out.update(b.to_boundary(out))
        return geo.clamp(xs, out)

    def _l2_update(self, geo, img, win, corner, size, left, index):
        n, C, H, W = img.shape
        sh, sw = size
        vh2 = self._randint(geo, H - sh + 1, index)
        vw2 = self._randint(geo, W - sw + 1, index)
        win2 = _place(torch.ones(n, sh, sw, device=img.device,
                                 dtype=img.dtype), (H, W), vh2, vw2)
        both = torch.maximum(win, win2)
        signs = self._signs(geo, (C, 1, 1), index, img)
        pattern = blob(sh, sw, img.device).to(img.dtype)
        flip = self._randint(geo, 2, index).bool()
        if sh == sw:  # the pattern's orientation is random too
            pattern = torch.where(flip[:, None, None], pattern.T, pattern)
        else:
            pattern = pattern.expand(n, sh, sw)
        placed = _place(pattern, (H, W), *corner) * signs
        norm1 = (img * win).pow(2).sum((-2, -1), keepdim=True).sqrt()
        mass = (img * both).pow(2).sum((-2, -1), keepdim=True)
        new = placed + img * win / (norm1 + GRAD_NORM_GUARD)
        target = (per_sample(left, new) + mass).sqrt()
        new = new * target / new.pow(2).sum(
            (-2, -1), keepdim=True).sqrt().clamp_min(GRAD_NORM_GUARD)
        return img * (1 - both) + new * win
