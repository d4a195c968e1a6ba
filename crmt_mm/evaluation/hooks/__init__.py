from .robust_eval_hook import RobustEvalHook

__all__ = ['RobustEvalHook']
