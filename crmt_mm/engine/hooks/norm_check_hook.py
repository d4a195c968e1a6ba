"""Refuses a run whose input normalisation differs from the prepared data's."""
import json
import os.path as osp
from typing import Dict, List, Sequence

from mmaction.registry import HOOKS
from mmengine.hooks import Hook

from crmt_mm.utils import reject_unknown_keys
from .phase_switch_hook import unwrap

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


@HOOKS.register_module()
@reject_unknown_keys
class PreparedNormCheckHook(Hook):
    """Check the data preprocessor's mean/std against the prepared data.

    Data generators such as ``tools/data/prepare_avdigits.py`` write the
    statistics of the data they wrote (``avdigits_norm.json``: per section
    a ``mean`` and ``std``). A config hard-codes them in its data
    preprocessor, so data prepared with other settings would be
    mis-normalised without any error, shifting every attack budget and the
    meaning of a missing (zeroed) modality. At ``before_run`` (training,
    validation and testing alike) this hook reads the file next to every
    configured dataset's ``ann_file`` and fails, giving the values to put
    in the config, when they disagree.

    Args:
        norm_file (str): file name, looked up in the directory of each
            dataloader's ``ann_file``. Defaults to ``'avdigits_norm.json'``.
        normalised_by_model (dict): input key -> section of the file whose
            ``mean``/``std`` the preprocessor of that input must apply (on
            every channel). Defaults to ``dict(imgs='visual')``.
        stored_normalised (Sequence[str]): input keys whose files already
            hold normalised values, so their preprocessor must not
            normalise again. Defaults to ``('audios',)``.
        rtol (float): accepted difference of mean and of std, as a
            fraction of the prepared data's std. Subsets of one data set
            differ by about 1.5 % (AV-Digits with 3 train clips per class:
            mean 106.52, std 31.86 against 106.09, 31.58 for the full set).
            Defaults to 0.05.

    Example:
        >>> default_hooks = dict(norm_check=dict(
        ...     type='PreparedNormCheckHook', norm_file='avdigits_norm.json'))
    """
    priority = 'VERY_HIGH'

    def __init__(self, norm_file: str = 'avdigits_norm.json',
                 normalised_by_model: Dict[str, str] = None,
                 stored_normalised: Sequence[str] = ('audios', ),
                 rtol: float = 0.05) -> None:
        if rtol < 0:
            raise ValueError(f'rtol must be >= 0, got {rtol}')
        self.norm_file = norm_file
        self.normalised_by_model = dict(
            imgs='visual') if normalised_by_model is None else dict(
                normalised_by_model)
        self.stored_normalised = tuple(stored_normalised)
        self.rtol = rtol

    def before_run(self, runner) -> None:
        preprocessors = getattr(unwrap(runner.model).data_preprocessor,
                                'preprocessors', {})
        for path in self._norm_files(runner.cfg):
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f'PreparedNormCheckHook: {path} not found next to the '
                    'annotation file; prepare the data with its tool (e.g. '
                    'tools/data/prepare_avdigits.py), or remove '
                    'default_hooks.norm_check for data without such a file.')
            with open(path) as f:
                norm = json.load(f)
            errors = self._compare(norm, preprocessors, path)
            if errors:
                raise ValueError(
                    f'the data preprocessor does not match the prepared '
                    f'data {path}:\n' + '\n'.join(f'  - {e}' for e in errors))

    def _norm_files(self, cfg) -> List[str]:
        files = []
        for key in LOADERS:
            dataset = (cfg.get(key) or {}).get('dataset') or {}
            ann_file = dataset.get('ann_file')
            if not isinstance(ann_file, str):
                continue
            ann_file = osp.join(dataset.get('data_root') or '', ann_file)
            if not osp.isfile(ann_file):
                # A loader that this run never builds (e.g. the training
                # list in a test-only run elsewhere); one that is built
                # fails on the missing list with the dataset's own error.
                continue
            path = osp.join(osp.dirname(ann_file), self.norm_file)
            if path not in files:
                files.append(path)
        return files

    def _compare(self, norm: dict, preprocessors, path: str) -> List[str]:
        errors = []
        for key, section in self.normalised_by_model.items():
            want = norm.get(section)
            if not isinstance(want, dict) or 'mean' not in want:
                errors.append(f'{path} has no {section!r} mean/std')
                continue
            pre = preprocessors[key] if key in preprocessors else None
            mean, std = self._stats(pre)
            fix = (f"set model.data_preprocessor.preprocessors.{key} "
                   f"mean=[{want['mean']:.2f}] * C, std=[{want['std']:.2f}]"
                   ' * C (C channels)')
            if mean is None:
                errors.append(f'input {key!r} is not normalised by the model '
                              f'but the data needs it: {fix}')
            elif any(abs(v - want[stat]) > self.rtol * want['std']
                     for stat, values in (('mean', mean), ('std', std))
                     for v in values):
                errors.append(
                    f'input {key!r}: config mean {mean} std {std}, prepared '
                    f"data mean {want['mean']:.4f} std {want['std']:.4f}: "
                    f'{fix}')
        for key in self.stored_normalised:
            pre = preprocessors[key] if key in preprocessors else None
            if self._stats(pre)[0] is not None:
                errors.append(
                    f'input {key!r} is stored normalised in {path}, but its '
                    'preprocessor normalises again: remove its mean/std')
        return errors

    @staticmethod
    def _stats(pre):
        if pre is None or not getattr(pre, '_enable_normalize', False):
            return None, None
        return ([round(float(v), 4) for v in pre.mean.flatten()],
                [round(float(v), 4) for v in pre.std.flatten()])
