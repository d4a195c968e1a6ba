"""Prepare UCF101 for crmt_mm: RGB frames, TV-L1 optical flow, split lists.

Input: the official archives unpacked,

- ``VIDEO_DIR``: ``UCF-101/<Class>/v_<Class>_gGG_cCC.avi``;
- ``SPLITS_DIR``: ``ucfTrainTestlist/`` with ``classInd.txt``
  (``<index> <Class>``, 1-based), ``trainlist0N.txt``
  (``<Class>/<video>.avi <index>``) and ``testlist0N.txt``
  (``<Class>/<video>.avi``), N = 1, 2, 3.

Output (mmaction2's rawframe layout; clip id ``<Class>/<video>``)::

    OUT_DIR/rawframes/<Class>/<video>/img_00001.jpg ...     # RGB
    OUT_DIR/rawframes/<Class>/<video>/flow_x_00001.jpg ...  # u
    OUT_DIR/rawframes/<Class>/<video>/flow_y_00001.jpg ...  # v
    OUT_DIR/ucf101_{train,val}_split_N_rawframes.txt  # mmaction2's names
    OUT_DIR/errors.log, OUT_DIR/settings.json

Flow frame t is the TV-L1 flow (OpenCV's ``DualTVL1OpticalFlow`` from
opencv-contrib, default parameters, on grayscale frames) from RGB frame t
to the next decoded frame, clipped to +-``--bound`` (15) pixels and mapped
linearly to 0..255 (``round((f + 15) * 255 / 30)``; 127.5 = no motion), as
the reference's ``extract_rgb_of.py``. The last frame has no successor and
repeats the previous flow, so every RGB frame has its flow pair and one
``total_frames`` serves both (``RawFlowDecode`` reads them).

By default every frame is kept (the reference; UCF101 runs at 25 fps).
``--fps F`` keeps F frames per second instead (the flow is still taken to
the next decoded frame, i.e. at the native frame rate), which cuts the
TV-L1 cost, the dominant one, by 25 / F. Clips with fewer than 2 frames
fail (no flow). Finished clips are skipped on a re-run.

Examples::

    python tools/data/prepare_ucf101.py UCF-101 ucfTrainTestlist \\
        data/ucf101 --workers 16
    python tools/data/prepare_ucf101.py UCF-101 ucfTrainTestlist \\
        data/ucf101 --splits 1 --fps 5 --short-side 256

Runtime and sizes: see docs/datasets.md.
"""
import argparse
import functools
import os.path as osp
import sys
import time
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

# Sibling tool modules, also when imported (tests).
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from extraction import (FLOW_DIRECTIONS, FLOW_TMPL, FRAME_TMPL,  # noqa: E402
                        ClipResult, VideoError, check_settings, count_frames,
                        make_staging, publish, run_jobs, sample_frames,
                        write_jpeg, write_lists)

FLOW_ALGOS = ('tvl1', 'farneback')
FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def read_class_index(splits_dir: str) -> Dict[str, int]:
    """``classInd.txt`` -> {class name: 0-based label}.

    Raises:
        FileNotFoundError: The file is missing.
        ValueError: A line does not read ``<index> <Class>``.
    """
    path = osp.join(splits_dir, 'classInd.txt')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path!r} not found; SPLITS_DIR must be the '
                                'unpacked ucfTrainTestlist/ directory')
    classes = {}
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            index, _, name = line.strip().partition(' ')
            if not index.isdigit() or not name:
                raise ValueError(f'{path}:{lineno}: expected "<index> '
                                 f'<Class>", got {line.strip()!r}')
            classes[name.strip()] = int(index) - 1
    return classes


def read_split(splits_dir: str, list_name: str,
               classes: Dict[str, int]) -> List[Tuple[str, int]]:
    """Parse one official split file into ``(clip_id, label)``.

    The label comes from the class directory; a train list's explicit index
    must agree with it.

    Args:
        splits_dir (str): ``ucfTrainTestlist`` directory.
        list_name (str): e.g. ``'trainlist01.txt'``.
        classes (dict[str, int]): From :func:`read_class_index`.

    Returns:
        list[tuple[str, int]]: ``('<Class>/<video>', label)`` in file order.

    Raises:
        FileNotFoundError: The split file is missing.
        ValueError: Unknown class or a contradicting index.
    """
    path = osp.join(splits_dir, list_name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'split file {path!r} not found')
    rows = []
    with open(path, encoding='utf-8') as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            video = fields[0]
            name = video.split('/')[0]
            if name not in classes:
                raise ValueError(f'{path}:{lineno}: class {name!r} is not in '
                                 'classInd.txt')
            label = classes[name]
            if len(fields) > 1 and int(fields[1]) - 1 != label:
                raise ValueError(f'{path}:{lineno}: index {fields[1]} '
                                 f'contradicts classInd.txt ({name} = '
                                 f'{label + 1})')
            rows.append((osp.splitext(video)[0], label))
    return rows


def quantize_flow(flow: np.ndarray, bound: float = 15.0) -> np.ndarray:
    """Clip a flow field to +-bound pixels and map it to uint8 0..255.

    Args:
        flow (np.ndarray): float [H, W, 2] displacements (u, v) in pixels.
        bound (float): Clipping bound in pixels. Defaults to 15.

    Returns:
        np.ndarray: uint8 [H, W, 2], ``round((f + bound) * 255 / (2 bound))``
        (so -bound -> 0, 0 -> 128 after rounding 127.5, +bound -> 255).
    """
    clipped = np.clip(flow, -bound, bound)
    return np.round((clipped + bound) * (255.0 / (2 * bound))).astype(
        np.uint8)


def make_flow_fn(algo: str) -> FlowFn:
    """The optical-flow function ``(gray_a, gray_b) -> [H, W, 2]`` float32.

    Args:
        algo (str): ``'tvl1'`` (OpenCV contrib's Dual TV-L1, default
            parameters, as the reference) or ``'farneback'`` (OpenCV core;
            a different, faster algorithm, only for when contrib is missing).

    Raises:
        ImportError: ``'tvl1'`` without opencv-contrib's ``cv2.optflow``.
        ValueError: Unknown ``algo``.
    """
    if algo == 'tvl1':
        optflow = getattr(cv2, 'optflow', None)
        if optflow is None or not hasattr(optflow,
                                          'DualTVL1OpticalFlow_create'):
            raise ImportError(
                f'OpenCV {cv2.__version__} lacks '
                'cv2.optflow.DualTVL1OpticalFlow_create (an '
                'opencv-contrib-python module): pip install '
                'opencv-contrib-python, or pass --flow-algo farneback '
                '(Farneback flow, not comparable with TV-L1 results).')
        tvl1 = optflow.DualTVL1OpticalFlow_create()
        return lambda a, b: tvl1.calc(a, b, None)
    if algo == 'farneback':
        return lambda a, b: cv2.calcOpticalFlowFarneback(
            a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    raise ValueError(f'--flow-algo must be one of {FLOW_ALGOS}, got {algo!r}')


def extract_clip(job: dict) -> ClipResult:
    """RGB and flow frames of one clip (worker; see module doc)."""
    out_dir, clip = job['out_dir'], job['clip_id']
    frame_dir = osp.join(out_dir, 'rawframes', clip)
    done = count_frames(frame_dir)
    # Flows are written after their frame, the last direction last.
    last_flow = functools.partial(FLOW_TMPL.format, FLOW_DIRECTIONS[-1])
    if done and count_frames(frame_dir, last_flow) == done:
        return ClipResult(clip, 'skipped', done)
    start = time.perf_counter()
    flow_fn = make_flow_fn(job['flow_algo'])
    stage = make_staging(out_dir, clip)
    count, flow = 0, None
    for count, (image, successor) in enumerate(
            sample_frames(job['video'], job['fps'], job['short_side']),
            start=1):
        write_jpeg(osp.join(stage, FRAME_TMPL.format(count)), image)
        if successor is not None:
            flow = quantize_flow(
                flow_fn(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
                        cv2.cvtColor(successor, cv2.COLOR_BGR2GRAY)),
                job['bound'])
        elif flow is None:
            raise VideoError('fewer than 2 decodable frames: no optical '
                             'flow')
        for channel, direction in enumerate(FLOW_DIRECTIONS):
            write_jpeg(osp.join(stage, FLOW_TMPL.format(direction, count)),
                       flow[..., channel])
    publish(stage, frame_dir)
    return ClipResult(clip, 'done', count, time.perf_counter() - start)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Extract RGB frames and TV-L1 flow (u/v JPEGs) from '
        'UCF101 and write mmaction2 rawframe lists for the official '
        'splits. See the module docstring for the formats.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('video_dir', help='the UCF-101/ video directory')
    parser.add_argument('splits_dir', help='the ucfTrainTestlist/ directory')
    parser.add_argument('out_dir', help='output directory (data_root)')
    parser.add_argument('--splits', type=int, nargs='+', default=[1, 2, 3],
                        choices=[1, 2, 3], help='official splits to list')
    parser.add_argument('--fps', type=float, default=None,
                        help='frames per second to keep (default: all)')
    parser.add_argument('--short-side', type=int, default=None,
                        help='resize frames to this short side (default: '
                        'keep 320x240)')
    parser.add_argument('--flow-algo', choices=FLOW_ALGOS, default='tvl1',
                        help='optical flow algorithm')
    parser.add_argument('--bound', type=float, default=15.0,
                        help='flow clipping bound in pixels')
    parser.add_argument('--workers', type=int, default=1,
                        help='parallel processes')
    return parser.parse_args(argv)


def split_lists(splits_dir: str, numbers: Sequence[int]
                ) -> Tuple[Dict[str, List[Tuple[str, int]]],
                           Dict[str, str]]:
    """Read the chosen official splits.

    Returns:
        tuple: ``{'train_1': rows, 'val_1': rows, ...}`` and the list file
        name of each key (``ucf101_train_split_1_rawframes.txt``, ...).
    """
    classes = read_class_index(splits_dir)
    splits, names = {}, {}
    for n in numbers:
        for kind, listing in (('train', 'trainlist'), ('val', 'testlist')):
            key = f'{kind}_{n}'
            splits[key] = read_split(splits_dir, f'{listing}{n:02d}.txt',
                                     classes)
            names[key] = f'ucf101_{kind}_split_{n}_rawframes.txt'
    return splits, names


def main(argv=None) -> Dict[str, ClipResult]:
    args = parse_args(argv)
    splits, names = split_lists(args.splits_dir, args.splits)
    make_flow_fn(args.flow_algo)  # fail before any work if unavailable
    check_settings(args.out_dir, dict(
        tool='prepare_ucf101', fps=args.fps, short_side=args.short_side,
        flow_algo=args.flow_algo, bound=args.bound, frame_tmpl=FRAME_TMPL,
        flow_tmpl=FLOW_TMPL))
    clips = list(dict.fromkeys(c for rows in splits.values() for c, _ in rows))
    videos = {c: osp.join(args.video_dir, c + '.avi') for c in clips}
    missing = [ClipResult(c, 'failed', error=f'video {videos[c]!r} not '
                          'found') for c in clips if not osp.isfile(videos[c])]
    jobs = [dict(clip_id=c, video=videos[c], out_dir=args.out_dir,
                 fps=args.fps, short_side=args.short_side,
                 flow_algo=args.flow_algo, bound=args.bound)
            for c in clips if osp.isfile(videos[c])]
    results = run_jobs('ucf101', extract_clip, jobs, args.out_dir,
                       args.workers, failures=missing)
    write_lists(args.out_dir, names, splits, results)
    return results


if __name__ == '__main__':
    main()
