"""Empirical per-modality, per-class Lipschitz constants tau (crmt.md §7).

``tau_k^(m) = max_i ||d z_k^(m)(x_i) / d x^(m)||_2`` over the given samples.
This max of gradient norms over finitely many points is a *lower* estimate
of the true Lipschitz constant, so radii built on it are empirical
certificates. For a model whose uni-modal logits are linear in their input,
the gradient is constant and the estimate is exact.
"""
from typing import Callable, Dict, Iterable, Optional, Sequence

import torch
import torch.distributed as dist
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


def estimate_tau_on_loader(model, loader: Iterable,
                           max_batches: Optional[int] = None,
                           class_chunk: Optional[int] = None,
                           logger=None) -> Dict[str, object]:
    """tau of ``model`` on a data loader, the same on every rank.

    Every batch goes through ``model.batch_to_modalities`` (preprocessing
    and the modality split), then :func:`estimate_tau`. The caller puts the
    model in eval mode (BatchNorm running statistics; no sample coupling).
    Under ``torch.distributed`` the per-rank estimates are all-reduced with
    MAX and the sample counts with SUM.

    Args:
        model: provides ``batch_to_modalities``, ``modality_logits``,
            ``modalities`` and ``num_classes``.
        loader (Iterable): raw batches (an mmengine dataloader).
        max_batches (int, optional): at most this many batches per rank.
            Defaults to None (all).
        class_chunk (int, optional): classes per vector-Jacobian batch, a
            memory/speed setting that does not change the result; this
            version takes one class at a time. Defaults to None.
        logger (optional): gets one line when done. Defaults to None.

    Returns:
        dict: ``tau`` [M, K] on the model's device (all-reduced MAX) and
        ``num_samples`` (int, summed over ranks).
    """
    if class_chunk is not None and (isinstance(class_chunk, bool) or
                                    not isinstance(class_chunk, int) or
                                    class_chunk < 1):
        raise ValueError(f'class_chunk must be None or an int >= 1, got '
                         f'{class_chunk!r}')
    batches = (model.batch_to_modalities(batch)[0] for batch in loader)
    result = estimate_tau(model.modality_logits, batches, model.modalities,
                          model.num_classes, max_batches=max_batches)
    device = next(iter(model.parameters())).device
    tau = result['tau'].to(device)
    count = torch.tensor(float(result['num_samples']), device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tau, op=dist.ReduceOp.MAX)
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
    if logger is not None:
        logger.info(f'tau estimated on {int(count)} samples')
    return dict(tau=tau, num_samples=int(count))
