"""Differentiable normalisation of classifier rows (docs/method.md §2).

``orthonormal_rows`` is the polar factor of the row-centred weight matrix,
``W~ = (W_c W_c^T + kappa I)^(-1/2) W_c``, so ``W~ W~^T = I - kappa G^-1``.
The inverse square root of the K x K Gram matrix ``G`` is computed by an
eigendecomposition with a hand-written backward pass (Daleckii-Krein
divided differences). torch's generic ``eigh`` backward divides by
eigenvalue gaps and blows up when the rows are already (close to)
orthonormal, i.e. when the eigenvalues cluster, which is exactly where CRMT
training drives the classifier; the divided difference ``(f(l_i) -
f(l_j)) / (l_i - l_j)`` tends to ``f'(l_i)`` instead and stays finite.
"""
import torch
from torch import Tensor


def _divided_differences(eigvals: Tensor, values: Tensor) -> Tensor:
    """Matrix ``L_ij = (f_i - f_j) / (l_i - l_j)``, ``f'(l_i)`` when equal."""
    gap = eigvals[:, None] - eigvals[None, :]
    diff = values[:, None] - values[None, :]
    derivative = -0.5 * eigvals.pow(-1.5)  # d/dl of l^(-1/2)
    close = gap.abs() <= 1e-9 * eigvals.abs().max()
    mean_derivative = 0.5 * (derivative[:, None] + derivative[None, :])
    safe_gap = torch.where(close, torch.ones_like(gap), gap)
    return torch.where(close, mean_derivative, diff / safe_gap)


class _InverseSqrt(torch.autograd.Function):
    """``G^(-1/2)`` of a symmetric positive definite matrix."""

    @staticmethod
    def forward(ctx, gram: Tensor) -> Tensor:
        eigvals, eigvecs = torch.linalg.eigh(gram)
        values = eigvals.rsqrt()
        ctx.save_for_backward(eigvals, eigvecs, values)
        return (eigvecs * values) @ eigvecs.T

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        eigvals, eigvecs, values = ctx.saved_tensors
        sym = 0.5 * (grad + grad.T)
        inner = eigvecs.T @ sym @ eigvecs
        return eigvecs @ (inner * _divided_differences(eigvals, values)) \
            @ eigvecs.T


def orthonormal_rows(weight: Tensor, kappa: float = 1e-6) -> Tensor:
    """Row-centred, mutually orthonormal version of ``weight`` [K, D].

    Needs ``K <= D - 1`` (centring removes one dimension). Computed in
    float64 for accuracy (K x K is tiny) and returned in ``weight``'s dtype.
    """
    num_rows, dim = weight.shape
    if num_rows > dim - 1:
        raise ValueError(
            f'orthonormal rows need num_classes <= feature_dim - 1, got '
            f'{num_rows} classes for {dim} features; use a wider encoder or '
            "row_norm='center_unit'.")
    centred = (weight - weight.mean(dim=1, keepdim=True)).double()
    gram = centred @ centred.T
    gram = gram + kappa * gram.diagonal().mean().detach() * torch.eye(
        num_rows, dtype=gram.dtype, device=gram.device)
    return (_InverseSqrt.apply(gram) @ centred).to(weight.dtype)


def center_unit_rows(weight: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows centred over D and scaled to unit norm (the reference's layer).

    Unit-norm but not mutually orthogonal.
    """
    centred = weight - weight.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(eps)
