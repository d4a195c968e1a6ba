"""Robust evaluation: the evaluator, its loops, the metric and the report.

Layout (one concept per module, ``docs/design.md``):

* :mod:`.contract`: the minimal model contract and its check;
* :mod:`.certify_config`: the ``certify`` option;
* :mod:`.model_state`: eval mode and feature capture;
* :mod:`.robust_evaluator`: :class:`RobustEvaluator`, per-batch robust
  evaluation for any driver (loops, hooks);
* :mod:`.loops`: ``RobustValLoop``/``RobustTestLoop``;
* :mod:`.hooks`: ``RobustEvalHook``, the same evaluation from
  ``custom_hooks`` during training;
* :mod:`.summary`: records -> accuracies, curves, certified accuracy;
* :mod:`.metrics`: ``RobustAccMetric`` (scalars and gathered records);
* :mod:`.report`: the one report builder (JSON, markdown, PNG);
* :mod:`.progress`: progress lines with ETA, ``EvalProgressHook``.
"""
from .hooks import RobustEvalHook
from .loops import RobustTestLoop, RobustValLoop
from .metrics import RobustAccMetric
from .progress import EvalProgressHook
from .report import build_report, compare_reports, load_report, write_report
from .robust_evaluator import (RobustEvaluator, check_tau_data,
                               resolve_tau_loader)

__all__ = ['RobustValLoop', 'RobustTestLoop', 'RobustEvalHook',
           'RobustAccMetric',
           'RobustEvaluator', 'resolve_tau_loader', 'check_tau_data',
           'EvalProgressHook', 'build_report', 'write_report', 'load_report',
           'compare_reports']
