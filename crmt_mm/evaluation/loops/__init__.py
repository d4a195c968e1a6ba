from .robust_loop import RobustTestLoop, RobustValLoop

__all__ = ['RobustValLoop', 'RobustTestLoop']
