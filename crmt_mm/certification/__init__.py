"""Certified robustness: CRMT's empirical radii and Lipschitz estimates
(plain torch), and sound randomized-smoothing certificates."""
from .lipschitz import (AUTO_CUDA_CLASS_CHUNK, estimate_tau,
                        estimate_tau_on_loader)
from .radius import certified_radius, margin_matrix, modality_radii
from .smoothing import (Certificate, GaussianSmoothingCertifier,
                        LateFusionForward, SmoothedPrediction,
                        binomial_two_sided_p, certified_accuracy,
                        clopper_pearson_lower,
                        noise_seed, sample_indices, smoothing_forward)

__all__ = ['certified_radius', 'modality_radii', 'margin_matrix',
           'estimate_tau', 'estimate_tau_on_loader', 'AUTO_CUDA_CLASS_CHUNK',
           'GaussianSmoothingCertifier', 'Certificate', 'SmoothedPrediction',
           'clopper_pearson_lower', 'binomial_two_sided_p',
           'certified_accuracy', 'noise_seed', 'sample_indices',
           'LateFusionForward', 'smoothing_forward']
