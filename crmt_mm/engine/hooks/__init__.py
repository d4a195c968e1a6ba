from .multimodal_visualization_hook import MultiModalVisualizationHook
from .phase_switch_hook import CRMTPhaseSwitchHook

__all__ = ['CRMTPhaseSwitchHook', 'MultiModalVisualizationHook']
