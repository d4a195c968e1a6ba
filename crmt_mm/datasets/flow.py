"""Optical-flow frames as a second visual modality (RGB + flow, UCF101).

mmaction2's ``RawFrameDecode(modality='Flow')`` writes flow to the same
``imgs`` key as RGB, so one sample cannot carry both. ``RawFlowDecode``
reads the flow pair of each sampled frame into its own ``flows`` key, and
``FuseFlow`` applies the RGB frames' geometric augmentation to it, so both
streams see the same crop, resize and flip (aligned pixels) and flips turn
the horizontal flow around. A pipeline::

    dict(type='UniformSample', clip_len=3, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='RawFlowDecode'),
    dict(type='RandomResizedCrop', lazy=True),
    dict(type='Resize', scale=(224, 224), keep_ratio=False, lazy=True),
    dict(type='Flip', flip_ratio=0.5, lazy=True),
    dict(type='FuseFlow'),   # before Fuse, which consumes the lazy record
    dict(type='Fuse'),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs', collect_keys=('imgs', 'flows')),

Note:
    mmaction2's own ``Flip`` inverts every other *frame* of ``Flow`` data,
    a leftover of 0.x layouts that stored x and y as separate frames; with
    1.x's stacked [H, W, 2] frames that is wrong, hence ``FuseFlow``.
    Flow values are not rescaled when the frame is resized (mmaction2's
    convention): they stay in the units of the stored frames.
"""
import os.path as osp
from typing import Optional, Sequence

import mmcv
import numpy as np
from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform
from mmengine import fileio


@TRANSFORMS.register_module()
class RawFlowDecode(BaseTransform):
    """Decode the flow frames at ``frame_inds`` into ``flows``.

    Flow frame i of a clip is stored as two grayscale JPEGs,
    ``filename_tmpl.format(directions[0], i)`` (horizontal, u) and
    ``filename_tmpl.format(directions[1], i)`` (vertical, v), in
    ``frame_dir``: ``flow_x_00001.jpg`` / ``flow_y_00001.jpg`` as written by
    ``tools/data/prepare_ucf101.py`` and mmaction2's denseflow, or
    ``directions=('u', 'v')`` for files named after u and v. Indices are the
    RGB ones (``UniformSample`` etc.), plus ``offset`` if present, so every
    RGB frame needs its flow pair.

    Required keys:

        - frame_dir
        - frame_inds
        - offset (optional)

    Added keys:

        - flows: list of uint8 [H, W, 2] arrays (u, v), one per index.

    Args:
        filename_tmpl (str): Flow file name template with a direction and
            an integer field. Defaults to ``'flow_{}_{:05d}.jpg'``.
        directions (Sequence[str]): Names of the u and v files. Defaults to
            ``('x', 'y')``.
        backend_args (dict, optional): mmengine file backend arguments.
            Defaults to None (local disk).

    Raises:
        FileNotFoundError: A flow file is missing (names it and the fix).
    """

    def __init__(self, filename_tmpl: str = 'flow_{}_{:05d}.jpg',
                 directions: Sequence[str] = ('x', 'y'),
                 backend_args: Optional[dict] = None) -> None:
        if len(directions) != 2:
            raise ValueError(f'RawFlowDecode: directions={directions!r} must '
                             "name the u and v files, e.g. ('x', 'y')")
        try:
            filename_tmpl.format(directions[0], 1)
        except (IndexError, KeyError, ValueError) as err:
            raise ValueError(
                f'RawFlowDecode: filename_tmpl={filename_tmpl!r} must take a '
                "direction and a frame index, e.g. 'flow_{}_{:05d}.jpg'"
            ) from err
        self.filename_tmpl = filename_tmpl
        self.directions = tuple(directions)
        self.backend_args = backend_args

    def _read(self, path: str) -> np.ndarray:
        if self.backend_args is None and not osp.isfile(path):
            raise FileNotFoundError(
                f'RawFlowDecode: flow frame {path!r} not found; extract flow '
                'with tools/data/prepare_ucf101.py or set filename_tmpl/'
                'directions to your file names.')
        return mmcv.imfrombytes(
            fileio.get(path, backend_args=self.backend_args),
            flag='grayscale')

    def transform(self, results: dict) -> dict:
        """Read the u/v pair of every index in ``results['frame_inds']``.

        Args:
            results (dict): Needs ``frame_dir`` and ``frame_inds``.

        Returns:
            dict: ``results`` with ``flows``.
        """
        offset = results.get('offset', 0)
        cache = {}
        flows = []
        for index in np.asarray(results['frame_inds']).reshape(-1):
            index = int(index) + offset
            if index not in cache:
                cache[index] = np.stack([
                    self._read(osp.join(results['frame_dir'],
                                        self.filename_tmpl.format(d, index)))
                    for d in self.directions], axis=-1)
            flows.append(cache[index].copy())
        results['flows'] = flows
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(filename_tmpl='
                f'{self.filename_tmpl!r}, directions={self.directions})')


@TRANSFORMS.register_module()
class FuseFlow(BaseTransform):
    """Apply the RGB frames' lazy crop, resize and flip to ``flows``.

    mmaction2's ``RandomResizedCrop``, ``MultiScaleCrop``, ``CenterCrop``,
    ``Resize`` and ``Flip`` with ``lazy=True`` only record their geometry in
    ``results['lazy']``; ``Fuse`` later applies it to ``imgs``. This
    transform applies the same record to ``flows`` (so it must come before
    ``Fuse``, which deletes it), negates the flow component across a flip
    (u for horizontal, v for vertical: ``255 - value`` in the stored 0..255
    units), and formats the result like ``FormatShape('NCTHW')``.

    Required keys:

        - flows, lazy, img_shape, num_clips, clip_len

    Modified keys:

        - flows: uint8 [num_clips, 2, clip_len, H, W] (H, W = img_shape).

    Raises:
        ValueError: No lazy record, or flow and RGB frames differ in size.
    """

    def transform(self, results: dict) -> dict:
        """Crop, resize, flip and format ``results['flows']``.

        Args:
            results (dict): See the class docstring.

        Returns:
            dict: ``results`` with the formatted ``flows``.
        """
        lazy = results.get('lazy')
        if lazy is None:
            raise ValueError(
                'FuseFlow needs the lazy geometry of the RGB frames: set '
                'lazy=True on the crop/resize/flip transforms and put '
                'FuseFlow before Fuse.')
        flows = results['flows']
        if tuple(flows[0].shape[:2]) != tuple(lazy['original_shape']):
            raise ValueError(
                f'flow frames of {results.get("frame_dir")!r} are '
                f'{flows[0].shape[:2]} but RGB frames '
                f'{tuple(lazy["original_shape"])}; extract both at the same '
                'size.')
        left, top, right, bottom = lazy['crop_bbox'].round().astype(int)
        height, width = results['img_shape']
        out = []
        for flow in flows:
            flow = mmcv.imresize(flow[top:bottom, left:right],
                                 (width, height),
                                 interpolation=lazy['interpolation']
                                 or 'bilinear')
            if lazy['flip']:
                flow = mmcv.imflip(flow, lazy['flip_direction'])
                channel = 0 if lazy['flip_direction'] == 'horizontal' else 1
                flow[..., channel] = 255 - flow[..., channel]
            out.append(flow)
        stacked = np.stack(out).reshape((results['num_clips'],
                                         results['clip_len'], height, width,
                                         2))
        results['flows'] = np.ascontiguousarray(
            stacked.transpose(0, 4, 1, 2, 3))
        return results
