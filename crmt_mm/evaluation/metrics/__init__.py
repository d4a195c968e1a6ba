from .robust_acc_metric import RobustAccMetric

__all__ = ['RobustAccMetric']
