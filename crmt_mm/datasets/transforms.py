"""Strict audio-feature loading for audio-visual pipelines.

mmaction2's ``LoadAudioFeature`` substitutes a (640, 80) zero or random
array when a file is missing and takes ``shape[0]`` as the length, which
silently corrupts training on fixed-size features such as [1, F, M].
``LoadCRMTAudio`` refuses instead.
"""
import os.path as osp
from typing import Optional, Sequence, Tuple

import numpy as np
from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform


def squeeze_leading_one(shape: Tuple[int, ...],
                        expected: Tuple[int, ...]) -> Tuple[int, ...]:
    """Drop one leading axis of size 1 if that makes the ranks match.

    Args:
        shape (tuple[int]): Actual array shape, e.g. ``(1, 64, 64)``.
        expected (tuple[int]): Expected shape, e.g. ``(64, 64)``.

    Returns:
        tuple[int]: ``shape[1:]`` when ``shape`` has one axis more than
        ``expected`` and that axis is 1, else ``shape``.
    """
    if len(shape) == len(expected) + 1 and shape[0] == 1:
        return tuple(shape[1:])
    return tuple(shape)


@TRANSFORMS.register_module()
class LoadCRMTAudio(BaseTransform):
    """Load a fixed-size audio feature (e.g. a log-mel spectrogram) strictly.

    Required keys:

        - audio_path

    Added keys:

        - audios: ``float32`` array [1, 1, F, M] (one clip N, one channel C,
          F frames, M mel bins), the layout ``ActionDataPreprocessor`` stacks
          into [B, 1, 1, F, M].

    Args:
        audio_shape (Sequence[int], optional): Expected feature shape
            ``(F, M)``; a stored leading axis of size 1 (``[1, F, M]``) is
            accepted. None accepts any 2-D feature. Defaults to ``(64, 64)``.

    Raises:
        FileNotFoundError: ``audio_path`` does not exist.
        ValueError: The file cannot be read as a numeric array, has the wrong
            shape, or holds NaN/Inf values.
    """

    def __init__(self,
                 audio_shape: Optional[Sequence[int]] = (64, 64)) -> None:
        if audio_shape is not None and len(audio_shape) != 2:
            raise ValueError(
                f'LoadCRMTAudio: audio_shape={audio_shape!r} must be (F, M) '
                '(frames, mel bins) or None.')
        self.audio_shape = None if audio_shape is None else tuple(
            int(s) for s in audio_shape)

    def transform(self, results: dict) -> dict:
        """Load ``results['audio_path']`` into ``results['audios']``.

        Args:
            results (dict): Needs ``audio_path``.

        Returns:
            dict: ``results`` with ``audios`` [1, 1, F, M] float32.
        """
        if 'audio_path' not in results:
            raise KeyError(
                'LoadCRMTAudio needs results["audio_path"]; build the data '
                'with AudioVisualDataset (or add audio_path to the infos).')
        path = results['audio_path']
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'LoadCRMTAudio: audio file {path!r} not found; re-extract '
                'the audio features or fix data_prefix["audio"].')
        try:
            feature = np.load(path, allow_pickle=False)
        except Exception as err:  # noqa: BLE001  (np.load raises many types)
            raise ValueError(
                f'LoadCRMTAudio: cannot read {path!r} as a .npy array '
                f'({type(err).__name__}: {err}); re-extract it.') from err
        if not (np.issubdtype(feature.dtype, np.floating)
                or np.issubdtype(feature.dtype, np.integer)):
            raise ValueError(
                f'LoadCRMTAudio: {path!r} has non-numeric dtype '
                f'{feature.dtype}; re-extract it.')
        expected = self.audio_shape
        if expected is None:
            # Any [F, M] (or [1, F, M]) feature.
            shape = squeeze_leading_one(feature.shape, (0, 0))
            ok = len(shape) == 2
        else:
            shape = squeeze_leading_one(feature.shape, expected)
            ok = shape == expected
        if not ok:
            want = 'a 2-D [F, M] array' if expected is None else \
                f'shape {expected} (or (1, *{expected}))'
            raise ValueError(
                f'LoadCRMTAudio: {path!r} has shape {feature.shape}, expected '
                f'{want}; re-extract it or set audio_shape.')
        feature = feature.reshape(shape).astype(np.float32)
        if not np.isfinite(feature).all():
            bad = int((~np.isfinite(feature)).sum())
            raise ValueError(
                f'LoadCRMTAudio: {path!r} holds {bad} NaN/Inf values; '
                're-extract it (a log of zero energy is the usual cause).')
        results['audios'] = feature[None, None]
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(audio_shape={self.audio_shape})'
