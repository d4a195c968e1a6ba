"""Certified robustness maths in plain torch: radii and Lipschitz estimates."""
from .lipschitz import (AUTO_CUDA_CLASS_CHUNK, estimate_tau,
                        estimate_tau_on_loader, eval_mode)
from .radius import certified_radius, margin_matrix, modality_radii

__all__ = ['certified_radius', 'modality_radii', 'margin_matrix',
           'estimate_tau', 'estimate_tau_on_loader', 'eval_mode',
           'AUTO_CUDA_CLASS_CHUNK']
