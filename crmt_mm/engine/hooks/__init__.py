from .multimodal_visualization_hook import MultiModalVisualizationHook
from .norm_check_hook import PreparedNormCheckHook
from .phase_switch_hook import CRMTPhaseSwitchHook

__all__ = ['CRMTPhaseSwitchHook', 'MultiModalVisualizationHook',
           'PreparedNormCheckHook']
