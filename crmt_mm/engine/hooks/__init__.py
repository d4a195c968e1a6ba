from .multimodal_visualization_hook import MultiModalVisualizationHook
from .norm_check_hook import PreparedNormCheckHook
from .phase_switch_hook import CRMTPhaseSwitchHook
from .world_size_hook import ResumeWorldSizeHook

__all__ = ['CRMTPhaseSwitchHook', 'MultiModalVisualizationHook',
           'PreparedNormCheckHook', 'ResumeWorldSizeHook']
