"""Writes test samples of a multi-modal model as images (``--show-dir``)."""
import os
import os.path as osp
from typing import Dict, Optional, Sequence

import cv2
import numpy as np
import torch
from mmaction.registry import HOOKS
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from crmt_mm.utils import reject_unknown_keys

#: Height in pixels of every modality's row in the written image.
ROW_HEIGHT = 128


@HOOKS.register_module()
@reject_unknown_keys
class MultiModalVisualizationHook(Hook):
    """One PNG per visualised test sample: every modality and the scores.

    mmaction2's ``VisualizationHook`` draws one video tensor and fails on the
    dict of modality tensors of a multi-modal batch. This hook draws each
    modality's raw input (before the data preprocessor) as one row: frames
    (3 channels, RGB) side by side, or single-channel maps such as a log-mel
    spectrogram (stored time x mel bins; drawn with time along x and low
    bins at the bottom) in a colour map; other channel counts
    (e.g. 2-channel flow) as one grey map per channel. The layout comes
    from the modality's ``format_shape`` in ``MultiModalDataPreprocessor``
    (``NCTHW``: the first clip's T frames; ``NCHW``: the segments). A
    header names the clip, its label and the top-1 class of the fused and
    every uni-modal score. ``tools/test.py --show-dir DIR`` installs it for
    multi-modal configs.

    Args:
        out_dir (str): directory of the images; a relative one is placed
            under ``<work_dir>/<timestamp>/`` as mmaction2 does.
        interval (int): draw every ``interval``-th sample of each rank.
            Defaults to 1.
        max_frames (int): most frames (or maps) drawn per modality.
            Defaults to 8.

    Example:
        >>> default_hooks = dict(visualization=dict(
        ...     type='MultiModalVisualizationHook', out_dir='vis'))
    """
    priority = 'LOW'

    def __init__(self, out_dir: str, interval: int = 1,
                 max_frames: int = 8) -> None:
        if not out_dir:
            raise ValueError('MultiModalVisualizationHook needs out_dir')
        if int(interval) < 1 or int(max_frames) < 1:
            raise ValueError('interval and max_frames must be >= 1, got '
                             f'{interval} and {max_frames}')
        self.out_dir = out_dir
        self.interval = int(interval)
        self.max_frames = int(max_frames)
        self._seen = 0

    def before_test(self, runner) -> None:
        if not osp.isabs(self.out_dir):
            self.out_dir = osp.join(runner.work_dir, runner.timestamp,
                                    self.out_dir)
        os.makedirs(self.out_dir, exist_ok=True)

    def after_test_iter(self, runner, batch_idx: int, data_batch: dict,
                        outputs: Sequence) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        formats = {key: getattr(pre, 'format_shape', 'NCHW')
                   for key, pre in getattr(model.data_preprocessor,
                                           'preprocessors', {}).items()}
        inputs = data_batch['inputs']
        for index, sample in enumerate(outputs):
            self._seen += 1
            if (self._seen - 1) % self.interval:
                continue
            rows = [self._row(key, inputs[key][index],
                              formats.get(key, 'NCHW'))
                    for key in sorted(inputs)]
            name = osp.basename(str(sample.metainfo.get(
                'frame_dir', sample.metainfo.get('filename', ''))))
            name = name or f'sample_{self._seen - 1}'
            image = self._compose(self._header(name, sample), rows)
            path = osp.join(self.out_dir, f'rank{get_rank()}_{name}.png')
            cv2.imwrite(path, image)

    # ------------------------------------------------------------------
    def _row(self, key: str, x: torch.Tensor, fmt: str) -> np.ndarray:
        """One modality -> an RGB row of height :data:`ROW_HEIGHT`."""
        x = x.detach().float().cpu()
        if fmt == 'NCTHW':  # [N, C, T, H, W]: the first clip's frames
            planes = x.reshape(-1, *x.shape[-4:])[0].permute(1, 0, 2, 3)
        else:  # [..., C, H, W]: segments (or clips) in order
            planes = x.reshape(-1, *x.shape[-3:])
        planes = planes[:self.max_frames]  # [P, C, H, W]
        channels = planes.shape[1]
        if channels == 3:
            tiles = [self._to_uint8(p.permute(1, 2, 0)) for p in planes]
        elif channels == 1:
            # [time, bins] -> time along x, low bins at the bottom.
            tiles = [cv2.applyColorMap(self._to_uint8(p[0].T.flip(0)),
                                       cv2.COLORMAP_VIRIDIS)[..., ::-1]
                     for p in planes]
        else:
            tiles = [np.repeat(self._to_uint8(c)[..., None], 3, 2)
                     for p in planes for c in p][:self.max_frames]
        tiles = [self._fit(t) for t in tiles]
        row = np.concatenate(tiles, 1)
        return self._label(row, f'{key} {list(x.shape)}')

    @staticmethod
    def _to_uint8(x: torch.Tensor) -> np.ndarray:
        """Pixels in 0..255 stay as they are; anything else is min-max
        scaled (features such as a log-mel)."""
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 255 or hi <= 1:
            x = (x - lo) / max(hi - lo, 1e-12) * 255
        return np.ascontiguousarray(x.clamp(0, 255).byte().numpy())

    @staticmethod
    def _fit(tile: np.ndarray) -> np.ndarray:
        tile = np.ascontiguousarray(tile)
        height, width = tile.shape[:2]
        width = max(1, round(width * ROW_HEIGHT / height))
        return cv2.resize(tile, (width, ROW_HEIGHT),
                          interpolation=cv2.INTER_NEAREST)

    @staticmethod
    def _label(row: np.ndarray, text: str) -> np.ndarray:
        band = np.full((20, row.shape[1], 3), 255, np.uint8)
        cv2.putText(band, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
        return np.concatenate([band, row], 0)

    @staticmethod
    def _header(name: str, sample) -> str:
        parts = [name]
        gt = sample.get('gt_label')
        if gt is not None:
            parts.append(f'label {int(gt.view(-1)[0])}')
        scores: Optional[Dict] = sample.get('pred_score')
        if isinstance(scores, dict):
            parts += [f'{k} {int(v.argmax())} ({float(v.max()):.2f})'
                      for k, v in scores.items()]
        elif scores is not None:
            parts.append(f'pred {int(scores.argmax())}')
        return ' | '.join(parts)

    def _compose(self, header: str, rows) -> np.ndarray:
        width = max(max(r.shape[1] for r in rows), 8 * len(header))
        rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)),
                       constant_values=255) for r in rows]
        top = self._label(np.zeros((0, width, 3), np.uint8), header)
        return np.concatenate([top] + rows, 0)[..., ::-1]  # RGB -> BGR
