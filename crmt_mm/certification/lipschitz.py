"""Empirical per-modality, per-class Lipschitz constants tau.

``tau_k^(m) = max_i ||d z_k^(m)(x_i) / d x^(m)||_2`` over the given samples.
This max of gradient norms over finitely many points is a *lower* estimate
of the true Lipschitz constant, so radii built on it are empirical
certificates. For a model whose uni-modal logits are linear in their input,
the gradient is constant and the estimate is exact.

Two equivalent ways to take the K vector-Jacobian products of a batch:

- the loop (``class_chunk=None``): one ``torch.autograd.grad`` per class
  with ``retain_graph``;
- batched (``class_chunk=C``): C classes per call with
  ``is_grads_batched=True``, i.e. ``vmap`` over C one-hot output
  cotangents. Memory grows with C (C input-VJPs' intermediates at once),
  so C is the memory limit. Should an operator of the encoder have no vmap
  rule for its backward, the estimate warns and falls back to the loop.
"""
import time
import warnings
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
from mmengine.dist import all_reduce
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import Tensor, nn

from crmt_mm.utils import Progress, eval_mode

#: Classes per batched backward that ``class_chunk='auto'`` uses on CUDA.
#: On CPU ``'auto'`` is the loop: ``tools/benchmark.py``
#: (``tau_batched_vs_loop``) measured batching to be no faster there. The
#: CUDA value is a memory-bounded guess until the GPU check measures it.
AUTO_CUDA_CLASS_CHUNK = 16

ClassChunk = Union[None, int, str]


def check_class_chunk(class_chunk: ClassChunk,
                      key: str = 'class_chunk') -> ClassChunk:
    """Validate a ``class_chunk`` option: None, ``'auto'`` or an int >= 1.

    Args:
        class_chunk: the value to check.
        key (str): the option's name in the error message. Defaults to
            ``'class_chunk'``.

    Returns:
        The value, unchanged.
    """
    if class_chunk is None or class_chunk == 'auto':
        return class_chunk
    if isinstance(class_chunk, bool) or not isinstance(class_chunk, int) \
            or class_chunk < 1:
        raise ValueError(f"{key} must be None (per-class loop), 'auto' or an "
                         f'int >= 1 (classes per batched backward), got '
                         f'{class_chunk!r}')
    return class_chunk


def resolve_class_chunk(class_chunk: ClassChunk,
                        device: torch.device) -> Optional[int]:
    """Classes per backward on ``device``; None means the per-class loop."""
    check_class_chunk(class_chunk)
    if class_chunk == 'auto':
        return AUTO_CUDA_CLASS_CHUNK if device.type == 'cuda' else None
    return None if class_chunk == 1 else class_chunk


def _loop_norms(stacked: Tensor, inputs: List[Tensor],
                classes: Sequence[int], retain_last: bool) -> Tensor:
    """Max per-sample input-gradient norms [M, len(classes)], one VJP per
    class of ``sum_i sum_m z_k^(m)(x_i)``."""
    out = stacked.new_zeros(len(inputs), len(classes))
    for position, k in enumerate(classes):
        grads = torch.autograd.grad(
            stacked[:, :, k].sum(), inputs,
            retain_graph=retain_last or position < len(classes) - 1,
            allow_unused=True)
        for m, grad in enumerate(grads):
            if grad is not None:  # None: logit k does not depend on x^(m)
                out[m, position] = grad.flatten(1).norm(dim=1).max()
    return out


def _batched_norms(stacked: Tensor, inputs: List[Tensor],
                   classes: Sequence[int], chunk: int) -> Tensor:
    """As ``_loop_norms``, with ``chunk`` one-hot cotangents per backward.

    The cotangent of class k is 1 at ``[:, :, k]`` of the ``[M, B, K]``
    logits, exactly what ``stacked[:, :, k].sum()`` back-propagates.
    """
    out = stacked.new_zeros(len(inputs), len(classes))
    for start in range(0, len(classes), chunk):
        block = list(classes[start:start + chunk])
        cotangents = stacked.new_zeros((len(block), ) + stacked.shape)
        for row, k in enumerate(block):
            cotangents[row, :, :, k] = 1
        grads = torch.autograd.grad(
            stacked, inputs, grad_outputs=cotangents,
            retain_graph=start + chunk < len(classes), allow_unused=True,
            is_grads_batched=True)
        for m, grad in enumerate(grads):
            if grad is not None:  # [C, B, ...]
                out[m, start:start + len(block)] = \
                    grad.flatten(2).norm(dim=2).amax(dim=1)
    return out


def estimate_tau(unimodal_logits: Callable[[Dict[str, Tensor]],
                                           Dict[str, Tensor]],
                 batches: Iterable[Dict[str, Tensor]],
                 modalities: Sequence[str],
                 num_classes: int,
                 classes: Optional[Sequence[int]] = None,
                 max_batches: Optional[int] = None,
                 class_chunk: ClassChunk = None) -> Dict[str, object]:
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
            Defaults to None (all).
        class_chunk (None | int | str): classes per backward. None or 1: the
            per-class loop; C > 1: C one-hot cotangents per
            ``autograd.grad(..., is_grads_batched=True)`` (memory ~ C input
            VJPs); ``'auto'``: the loop on CPU,
            ``AUTO_CUDA_CLASS_CHUNK`` on CUDA. Defaults to None.

    Returns:
        dict: ``tau`` [M, K] float32 and ``num_samples`` (int).
    """
    check_class_chunk(class_chunk)
    classes = list(range(num_classes) if classes is None else classes)
    tau = None
    num_samples = 0
    chunk = None
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
                chunk = resolve_class_chunk(class_chunk, stacked.device)
            norms = None
            if chunk is not None:
                try:
                    norms = _batched_norms(stacked, inputs, classes, chunk)
                except RuntimeError as error:
                    # vmap has no batching rule for some operator's backward.
                    warnings.warn(
                        f'tau: batched VJPs (class_chunk={chunk}) failed '
                        f'({str(error).splitlines()[0][:200]}); falling back '
                        'to one backward per class (class_chunk=None).',
                        RuntimeWarning)
                    chunk = None
                    logits = unimodal_logits(dict(zip(modalities, inputs)))
                    stacked = torch.stack([logits[m] for m in modalities])
            if norms is None:
                norms = _loop_norms(stacked, inputs, classes, False)
            tau[:, classes] = torch.maximum(tau[:, classes], norms)
            num_samples += inputs[0].shape[0]
    if tau is None:
        raise ValueError('estimate_tau got no batches: the data loader is '
                         'empty (check the dataset and max_batches).')
    return dict(tau=tau.detach().float(), num_samples=num_samples)


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    return torch.device('cpu') if tensor is None else tensor.device


def estimate_tau_on_loader(model: nn.Module,
                           loader: Iterable,
                           max_batches: Optional[int] = None,
                           class_chunk: ClassChunk = None,
                           logger=None) -> Dict[str, object]:
    """tau of a CRMT recognizer on a data loader, max over ranks.

    The one tau procedure of crmt_mm (step-2 switch and evaluation-time
    certification): every module in eval mode (BatchNorm running
    statistics; the previous per-module flags are restored afterwards),
    each batch through the model's ``data_preprocessor`` and
    ``split_inputs``, gradients of the uni-modal logits w.r.t. the inputs
    only (see :func:`estimate_tau`), then ``all_reduce`` MAX of tau and SUM
    of the sample count across ranks (a no-op without distributed).
    Progress lines with an ETA go to ``logger``.

    Args:
        model (nn.Module): a ``CRMTRecognizer``, optionally DDP-wrapped.
        loader (Iterable): yields mmengine data batches (``dict(inputs=...,
            data_samples=...)``), e.g. ``runner.train_dataloader``; each rank
            iterates its own shard.
        max_batches (int, optional): at most this many batches per rank (a
            documented sub-sample, which lowers tau). Defaults to None (all).
        class_chunk (None | int | str): classes per backward, see
            :func:`estimate_tau`. Defaults to None (the per-class loop).
        logger (optional): an ``MMLogger`` or logger name for progress;
            None prints. Defaults to None.

    Returns:
        dict: ``tau`` [M, K] float32 tensor on the model's device (rows in
        ``model.modalities`` order, max over ranks) and ``num_samples``
        (int, summed over ranks).

    Example:
        >>> out = estimate_tau_on_loader(model, runner.train_dataloader,
        ...                              max_batches=100, class_chunk='auto')
        >>> model.tau.copy_(out['tau'])
    """
    if max_batches is not None and (isinstance(max_batches, bool)
                                    or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f'max_batches must be None or an int >= 1, got '
                         f'{max_batches!r}')
    check_class_chunk(class_chunk)
    model = model.module if is_model_wrapper(model) else model
    try:
        length = len(loader)
    except TypeError:  # an iterable without a length
        length = None
    total = length if max_batches is None else (
        max_batches if length is None else min(length, max_batches))
    progress = Progress(total, seconds=60.0)
    counts = dict(batches=0, samples=0)

    def batches():
        for batch in loader:
            if max_batches is not None and counts['batches'] >= max_batches:
                return
            done = counts['batches']
            if done and done != total and progress.due(done):
                elapsed = time.perf_counter() - progress.start
                print_log(f'tau: {progress.line(done)} ({counts["samples"]} '
                          f'samples, {counts["samples"] / elapsed:.2f} '
                          'samples/s)', logger=logger)
            data = model.data_preprocessor(batch, False)
            x = model.split_inputs(data['inputs'], data.get('data_samples'))
            counts['batches'] += 1
            counts['samples'] += next(iter(x.values())).shape[0]
            yield x

    with eval_mode(model):
        result = estimate_tau(model.modality_logits, batches(),
                              model.modalities, model.num_classes,
                              max_batches=max_batches,
                              class_chunk=class_chunk)
    device = _device_of(model)
    tau = result['tau'].to(device)
    all_reduce(tau, op='max')
    count = torch.tensor(float(result['num_samples']), device=device)
    all_reduce(count, op='sum')
    return dict(tau=tau, num_samples=int(count.item()))
