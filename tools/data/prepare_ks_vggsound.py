"""Prepare Kinetics-Sounds or VGGSound for crmt_mm (frames + fbank + lists).

Input: a folder of videos (searched recursively, any of
``.mp4 .mkv .webm .avi .mov .flv``; a clip's id is its file name without
extension) and its annotations, in one of two formats:

- ``--list SPLIT=FILE`` (repeatable), the reference's Kinetics-Sounds lists
  (``ks_train_overlap.txt``): one ``<clip_id> <label>`` per line, the label
  an integer class index or, with spaces allowed, a class name; a video
  extension on the clip id is ignored.
- ``--csv FILE``, VGGSound's official ``vggsound.csv``: rows
  ``<youtube id>,<start seconds>,<class name>,<split>``; the clip id is
  ``--clip-id-tmpl`` (default ``{ytid}_{start:06d}``, fields ``ytid``,
  ``start`` and ``end = start + 10``) and the split column names the list.

Class names map to labels by their line index in ``--classes FILE`` (one
name per line); without it, by the sorted set of names in the annotations.
Either way the mapping is written to ``OUT_DIR/classes.txt``: pin that file.

Output (mmaction2's rawframe layout, read by ``AudioVisualDataset``)::

    OUT_DIR/rawframes/<clip_id>/img_00001.jpg ...  # frames at --fps (1)
    OUT_DIR/audio/<clip_id>.npy      # float32 [1024, 128], normalised fbank
    OUT_DIR/<name>_<split>.txt       # '<clip_id> <total_frames> <label>'
    OUT_DIR/classes.txt              # label -> class name (if names known)
    OUT_DIR/errors.log               # '<clip_id>\\t<reason>' of this run
    OUT_DIR/settings.json            # extraction settings (resume guard)

Audio: the first channel of the first audio stream, resampled to
``--sample-rate`` (16 kHz) 16-bit PCM, then CRMT's features
(``crmt_mm.data_prep.fbank.crmt_audio_feature``: mean removed, Kaldi fbank
with 128 mel bins, 25 ms Hanning window, 10 ms shift, no dither, padded or
trimmed to 1,024 frames, ``(fbank + 4.503877) / (5.141276 * 2)``).

A clip fails (and is logged, not listed) if its video is missing or cannot
be decoded, has no video frames or no audio stream, or its audio peak is
below ``--min-peak`` (silent). Finished clips are skipped on a re-run.

Examples::

    python tools/data/prepare_ks_vggsound.py VIDEOS data/kinetics_sounds \\
        --name ks --list train=ks_train_overlap.txt \\
        --list test=ks_test_overlap.txt --workers 16
    python tools/data/prepare_ks_vggsound.py VIDEOS data/vggsound \\
        --name vggsound --csv vggsound.csv --workers 16

Runtime and sizes: see docs/datasets.md.
"""
import argparse
import csv
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# Sibling tool modules and the repository, also when imported (tests).
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from extraction import (FRAME_TMPL, ClipResult, VideoError,  # noqa: E402
                        check_settings, count_frames, make_staging, publish,
                        read_audio, run_jobs, sample_frames, write_jpeg,
                        write_lists)

from crmt_mm.data_prep.fbank import (NUM_FRAMES, NUM_MEL_BINS,  # noqa: E402
                                     SAMPLE_RATE, crmt_audio_feature)

VIDEO_EXTENSIONS = ('.mp4', '.mkv', '.webm', '.avi', '.mov', '.flv')
#: Split -> [(clip_id, label token)], tokens still strings.
RawSplits = Dict[str, List[Tuple[str, str]]]


def strip_video_ext(name: str) -> str:
    """``'abc.mp4'`` -> ``'abc'``; other names unchanged."""
    stem, ext = osp.splitext(name)
    return stem if ext.lower() in VIDEO_EXTENSIONS else name


def read_lists(specs: Sequence[str]) -> RawSplits:
    """Parse ``SPLIT=FILE`` lists of ``<clip_id> <label>`` lines.

    Args:
        specs (Sequence[str]): ``'train=ks_train_overlap.txt'`` etc.

    Returns:
        dict: Split -> ``(clip_id, label token)`` in file order.

    Raises:
        FileNotFoundError: A list file is missing.
        ValueError: A spec lacks ``=``, a split repeats, or a line does not
            read ``<clip_id> <label>``.
    """
    splits: RawSplits = {}
    for spec in specs:
        split, sep, path = spec.partition('=')
        if not sep or not split or not path:
            raise ValueError(f'--list {spec!r}: expected SPLIT=FILE, e.g. '
                             'train=ks_train_overlap.txt')
        if split in splits:
            raise ValueError(f'--list: split {split!r} given twice')
        if not osp.isfile(path):
            raise FileNotFoundError(f'--list {spec!r}: file {path!r} not '
                                    'found')
        rows = []
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip() or line.lstrip().startswith('#'):
                    continue
                fields = line.split(maxsplit=1)
                if len(fields) != 2:
                    raise ValueError(
                        f'{path}:{lineno}: expected "<clip_id> <label>", got '
                        f'{line.strip()!r}')
                rows.append((strip_video_ext(fields[0]), fields[1].strip()))
        splits[split] = rows
    return splits


def read_vggsound_csv(path: str, clip_id_tmpl: str) -> RawSplits:
    """Parse VGGSound's ``ytid,start,class name,split`` CSV.

    Args:
        path (str): ``vggsound.csv``; lines starting with ``#`` are skipped.
        clip_id_tmpl (str): Clip id template with fields ``ytid``,
            ``start`` and ``end`` (integers, seconds).

    Returns:
        dict: Split -> ``(clip_id, class name)`` in file order.

    Raises:
        FileNotFoundError: The CSV is missing.
        ValueError: A row is malformed.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'--csv: file {path!r} not found')
    splits: RawSplits = {}
    with open(path, newline='', encoding='utf-8') as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].lstrip().startswith('#'):
                continue
            try:
                ytid, start, name, split = (field.strip() for field in row)
                start = int(start)
            except ValueError as err:
                raise ValueError(
                    f'{path}:{lineno}: expected "ytid,start,class name,split"'
                    f' with an integer start, got {row!r}') from err
            clip = clip_id_tmpl.format(ytid=ytid, start=start, end=start + 10)
            splits.setdefault(split, []).append((clip, name))
    return splits


def resolve_labels(raw: RawSplits, classes: Optional[List[str]]
                   ) -> Tuple[Dict[str, List[Tuple[str, int]]],
                              Optional[List[str]]]:
    """Turn label tokens into integer labels.

    Tokens made of digits are class indices; others are class names, looked
    up in ``classes`` (or in the sorted set of names when it is None).

    Args:
        raw (dict): Split -> ``(clip_id, token)``.
        classes (list[str], optional): Class names, index = label.

    Returns:
        tuple: Split -> ``(clip_id, label)``, and the class names (None when
        every token is an index and no class list was given).

    Raises:
        ValueError: Unknown class name, index out of range, or a clip listed
            twice in one split with different labels.
    """
    names = sorted({t for rows in raw.values() for _, t in rows
                    if not t.isdigit()})
    if classes is None and names:
        classes = names
    index = {name: i for i, name in enumerate(classes or [])}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ValueError(f'class names not in --classes: {unknown[:5]}; add '
                         'them to the class list or fix the annotations')
    splits = {}
    for split, rows in raw.items():
        labels: Dict[str, int] = {}
        for clip, token in rows:
            label = int(token) if token.isdigit() else index[token]
            if classes is not None and label >= len(classes):
                raise ValueError(f'{split}: clip {clip!r} has label {label}'
                                 f' >= {len(classes)} classes')
            if labels.setdefault(clip, label) != label:
                raise ValueError(f'{split}: clip {clip!r} is listed twice '
                                 f'with labels {labels[clip]} and {label}')
        splits[split] = list(labels.items())
    return splits, classes


def index_videos(video_dir: str) -> Dict[str, str]:
    """Map each video's file name without extension to its path.

    Args:
        video_dir (str): Folder searched recursively.

    Returns:
        dict[str, str]: Clip id -> video path.

    Raises:
        FileNotFoundError: ``video_dir`` does not exist.
        ValueError: Two videos share a clip id.
    """
    if not osp.isdir(video_dir):
        raise FileNotFoundError(f'video directory {video_dir!r} not found')
    videos: Dict[str, str] = {}
    for root, _, files in os.walk(video_dir):
        for name in files:
            stem, ext = osp.splitext(name)
            if ext.lower() not in VIDEO_EXTENSIONS:
                continue
            path = osp.join(root, name)
            if stem in videos:
                raise ValueError(f'two videos for clip {stem!r}: '
                                 f'{videos[stem]!r} and {path!r}; keep one')
            videos[stem] = path
    return videos


def extract_clip(job: dict) -> ClipResult:
    """Frames and audio feature of one clip (worker; see module doc)."""
    out_dir, clip = job['out_dir'], job['clip_id']
    frame_dir = osp.join(out_dir, 'rawframes', clip)
    audio_path = osp.join(out_dir, 'audio', clip + '.npy')
    done = count_frames(frame_dir)
    if done and osp.isfile(audio_path):
        return ClipResult(clip, 'skipped', done)
    start = time.perf_counter()
    # Audio first: silent or audio-less clips fail before any frame work.
    waveform = read_audio(job['video'], job['sample_rate'])
    peak = float(np.abs(waveform).max())
    if peak < job['min_peak']:
        raise VideoError(f'silent audio (peak {peak:.3g} < --min-peak '
                         f'{job["min_peak"]:g})')
    feature = crmt_audio_feature(waveform, job['sample_rate'])
    stage = make_staging(out_dir, clip)
    count = 0
    for count, (image, _) in enumerate(
            sample_frames(job['video'], job['fps'], job['short_side']),
            start=1):
        write_jpeg(osp.join(stage, FRAME_TMPL.format(count)), image)
    if not count:
        raise VideoError('no decodable video frames')
    staged_audio = stage + '.npy'
    np.save(staged_audio, feature)
    # Audio before frames: a clip counts as finished once its frame
    # directory exists, so that must be the last rename.
    publish(staged_audio, audio_path)
    publish(stage, frame_dir)
    return ClipResult(clip, 'done', count, time.perf_counter() - start)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Extract frames at 1 fps and CRMT fbank features from '
        'Kinetics-Sounds / VGGSound videos and write mmaction2 rawframe '
        'lists. See the module docstring for the formats.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('video_dir', help='folder of videos (recursive)')
    parser.add_argument('out_dir', help='output directory (data_root)')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--list', action='append', metavar='SPLIT=FILE',
                        help='"<clip_id> <label>" list of one split '
                        '(repeat per split)')
    source.add_argument('--csv', metavar='FILE',
                        help='VGGSound "ytid,start,class name,split" CSV')
    parser.add_argument('--name', default='ks',
                        help='list prefix: OUT_DIR/<name>_<split>.txt')
    parser.add_argument('--classes', metavar='FILE',
                        help='class names, one per line (line index = '
                        'label)')
    parser.add_argument('--clip-id-tmpl', default='{ytid}_{start:06d}',
                        help='clip id of a --csv row')
    parser.add_argument('--fps', type=float, default=1.0,
                        help='frames per second to keep')
    parser.add_argument('--short-side', type=int, default=None,
                        help='resize frames to this short side (default: '
                        'keep the source size, as the reference)')
    parser.add_argument('--sample-rate', type=int, default=SAMPLE_RATE,
                        help='audio sample rate in Hz before the fbank')
    parser.add_argument('--min-peak', type=float, default=1e-4,
                        help='audio whose peak |sample| is below this is '
                        'silent (0 keeps every clip)')
    parser.add_argument('--workers', type=int, default=1,
                        help='parallel processes')
    return parser.parse_args(argv)


def read_classes(path: Optional[str]) -> Optional[List[str]]:
    """Class names of ``--classes`` (None if not given)."""
    if path is None:
        return None
    if not osp.isfile(path):
        raise FileNotFoundError(f'--classes: file {path!r} not found')
    with open(path, encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def main(argv=None) -> Dict[str, ClipResult]:
    args = parse_args(argv)
    raw = read_lists(args.list) if args.list else read_vggsound_csv(
        args.csv, args.clip_id_tmpl)
    splits, classes = resolve_labels(raw, read_classes(args.classes))
    videos = index_videos(args.video_dir)
    check_settings(args.out_dir, dict(
        tool='prepare_ks_vggsound', fps=args.fps, short_side=args.short_side,
        sample_rate=args.sample_rate, audio_shape=[NUM_FRAMES, NUM_MEL_BINS],
        frame_tmpl=FRAME_TMPL))
    if classes is not None:
        with open(osp.join(args.out_dir, 'classes.txt'), 'w',
                  encoding='utf-8') as f:
            f.writelines(name + '\n' for name in classes)
    clips = list(dict.fromkeys(c for rows in splits.values() for c, _ in rows))
    missing = [ClipResult(c, 'failed', error='video not found in '
                          f'{args.video_dir}') for c in clips
               if c not in videos]
    jobs = [dict(clip_id=c, video=videos[c], out_dir=args.out_dir,
                 fps=args.fps, short_side=args.short_side,
                 sample_rate=args.sample_rate, min_peak=args.min_peak)
            for c in clips if c in videos]
    results = run_jobs(args.name, extract_clip, jobs, args.out_dir,
                       args.workers, failures=missing)
    write_lists(args.out_dir,
                {s: f'{args.name}_{s}.txt' for s in splits}, splits, results)
    return results


if __name__ == '__main__':
    main()
