"""Robust evaluation: loops, the robust accuracy metric and reports."""
from .loops import RobustTestLoop, RobustValLoop
from .metrics import RobustAccMetric
from .report import compare_reports, load_report, write_report

__all__ = ['RobustValLoop', 'RobustTestLoop', 'RobustAccMetric',
           'write_report', 'load_report', 'compare_reports']
