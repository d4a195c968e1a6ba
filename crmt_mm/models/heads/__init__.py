from .fusion_head import ConcatHead, CRMTHead, FusionHead
from .orthonormal import center_unit_rows, orthonormal_rows

__all__ = ['FusionHead', 'ConcatHead', 'CRMTHead', 'orthonormal_rows',
           'center_unit_rows']
