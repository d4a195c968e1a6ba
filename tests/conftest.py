import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import crmt_mm.compat  # noqa: E402,F401  (mmaction import fix first)

import pytest  # noqa: E402


@pytest.fixture(scope='session')
def avdigits_tiny(tmp_path_factory):
    """A tiny AV-Digits subset on disk (3 train / 1 test clips per class)."""
    from crmt_mm.data_prep.avdigits import prepare_avdigits
    root = str(tmp_path_factory.mktemp('avdigits_tiny'))
    prepare_avdigits(root, seed=0, train_per_class=3, test_per_class=1)
    return root
