"""crmt_mm: certifiably robust multi-modal training for mmaction2/mmengine.

Importing the package applies the compatibility fixes of
:mod:`crmt_mm.compat` and registers every crmt_mm module into mmaction2's
registries, so ``custom_imports=dict(imports=['crmt_mm'])`` is all a config
needs.
"""
from . import compat  # noqa: F401  (must come first)
from . import datasets, engine, evaluation, models  # noqa: F401,E402

__version__ = '0.1.0'
