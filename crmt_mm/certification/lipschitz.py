"""Empirical per-modality, per-class Lipschitz constants tau (crmt.md §7).

``tau_k^(m) = max_i ||d z_k^(m)(x_i) / d x^(m)||_2`` over the given samples.
This max of gradient norms over finitely many points is a *lower* estimate
of the true Lipschitz constant, so radii built on it are empirical
certificates. For a model whose uni-modal logits are linear in their input,
the gradient is constant and the estimate is exact.
"""
from typing import Callable, Dict, Iterable, Optional, Sequence

import torch
from torch import Tensor


def _sample_norms(grad: Tensor) -> Tensor:
    return grad.flatten(1).norm(dim=1)


def estimate_tau(unimodal_logits: Callable[[Dict[str, Tensor]],
                                           Dict[str, Tensor]],
                 batches: Iterable[Dict[str, Tensor]],
                 modalities: Sequence[str],
                 num_classes: int,
                 classes: Optional[Sequence[int]] = None,
                 max_batches: Optional[int] = None) -> Dict[str, object]:
    """Running max of input-gradient norms of every uni-modal logit.

    One vector-Jacobian product per class k of ``sum_i sum_m z_k^(m)(x_i)``
    w.r.t. all modality inputs yields every sample's gradient for every
    modality at once: in eval mode samples do not interact and ``z^(m)``
    depends on ``x^(m)`` only. The caller must therefore put the model in
    eval mode. Gradients are taken with ``torch.autograd.grad`` on the inputs
    only, so no parameter ``.grad`` is written.

    Args:
        unimodal_logits: maps ``{modality: [B, ...]}`` to ``{modality: [B, K]}``.
        batches: iterable of modality dicts (normalised inputs).
        modalities: modality names, fixing the row order of ``tau``.
        num_classes (int): K.
        classes: restrict to these classes (others stay 0). Defaults to all.
        max_batches (int, optional): stop after this many batches.

    Returns:
        dict: ``tau`` [M, K] float32 and ``num_samples`` (int).
    """
    classes = range(num_classes) if classes is None else list(classes)
    tau = None
    num_samples = 0
    with torch.enable_grad():
        for index, batch in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                break
            inputs = [batch[m].detach().requires_grad_(True)
                      for m in modalities]
            logits = unimodal_logits(dict(zip(modalities, inputs)))
            stacked = torch.stack([logits[m] for m in modalities])  # M,B,K
            if tau is None:
                tau = stacked.new_zeros(len(modalities), num_classes)
            for position, k in enumerate(classes):
                grads = torch.autograd.grad(
                    stacked[:, :, k].sum(), inputs,
                    retain_graph=position < len(classes) - 1,
                    allow_unused=True)
                for m, grad in enumerate(grads):
                    if grad is None:  # logit k does not depend on x^(m)
                        continue
                    tau[m, k] = torch.maximum(tau[m, k],
                                              _sample_norms(grad).max())
            num_samples += inputs[0].shape[0]
    if tau is None:
        raise ValueError('estimate_tau got no batches: the data loader is '
                         'empty (check the dataset and max_batches).')
    return dict(tau=tau.detach().float(), num_samples=num_samples)
