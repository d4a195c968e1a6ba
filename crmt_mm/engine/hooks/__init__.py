from .phase_switch_hook import CRMTPhaseSwitchHook

__all__ = ['CRMTPhaseSwitchHook']
