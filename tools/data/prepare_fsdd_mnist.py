"""Prepare FSDD-MNIST: real spoken digits paired with real handwritten ones.

FSDD-MNIST follows the recipe of AV-MNIST (Vielzeuf et al., "CentralNet",
2018): a recording of a spoken digit is paired with a handwritten image of
the same digit, and the images lose most of their energy to PCA. The
recordings are the Free Spoken Digit Dataset (FSDD, CC BY-SA 4.0) and the
images MNIST's idx files, both as downloaded. It is *our* construction, not
the MultiBench AV-MNIST arrays: never report its numbers as AV-MNIST's.

Inputs:

- ``--fsdd DIR``: FSDD recordings ``{digit}_{speaker}_{take}.wav`` (any
  subset of speakers; other file types in DIR are ignored), 16-bit PCM
  mono WAV at ``--source-rate`` (FSDD's 8 kHz).
- ``--mnist DIR``: ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``
  (``.gz`` or not); ``train-images-idx3-ubyte``/``train-labels-idx1-ubyte``
  too when present (then the train/val image pools come from MNIST's
  training set and the test pool from its test set).

Split (seeded by ``--seed``, documented in docs/datasets.md):

- ``--split standard`` (FSDD's convention): takes 0-4 of every speaker and
  digit are the test set; ``--val-takes`` takes per speaker and digit, drawn
  from takes 5 and above, are the validation set; the rest is training.
- ``--split speaker --test-speakers NAME ...``: every recording of those
  speakers is the test set; validation takes are drawn from the others.
- MNIST images are split per digit into disjoint train/val/test pools
  (``--image-split``; with MNIST's training files: train/val from them, test
  from t10k). Each recording is paired with an image of the same digit
  from its own split's pool, without replacement until the pool is used up.
  ``fsdd_mnist_<split>_sources.csv`` records every pairing.

Features:

- Audio: the KS/VGGSound path (decoding and resampling to 16 kHz by FFmpeg,
  ``crmt_mm.data_prep.fbank.crmt_audio_feature``: Kaldi fbank, 128 mel
  bins, 25 ms window, 10 ms shift), cut or zero-padded to ``--audio-frames``
  (96 = 0.975 s; the length distribution is in docs/datasets.md), then
  ``(x - mean) / std`` with the training split's scalar constants. Optional
  white noise at ``--audio-snr`` dB (off by default, as in AV-MNIST's own
  generator).
- Images: PCA fitted on the training pool only; each image is projected on
  the leading components that explain ``--pca-variance`` (25 %, AV-MNIST's
  setting) of the variance, reconstructed, clipped to [0, 255]; one grey
  28x28 frame per clip. ``--pca-variance 1`` keeps the images unchanged.

Output (read by ``AudioVisualDataset``; configs/_base_/datasets/
fsdd_mnist.py)::

    OUT/rawframes/<split>/<clip_id>/img_00001.png   # the image
    OUT/audio/<split>/<clip_id>.npy     # float32 [frames, 128], normalised
    OUT/fsdd_mnist_<split>.txt          # '<clip_id> 1 <label>'
    OUT/fsdd_mnist_<split>_sources.csv  # recording -> image pairing
    OUT/fsdd_mnist_norm.json            # training-split constants
    OUT/pca.npz                         # fitted PCA (mean, components)
    OUT/settings.json, OUT/meta.json    # settings guard, completion mark
    OUT/errors.log                      # per-file errors of the last run

``--extra-test NAME=FSDD_DIR,MNIST_DIR`` (repeatable) adds the test list
``fsdd_mnist_<NAME>.txt`` from other recordings and images, with the
training split's PCA and constants; the main splits are never rebuilt.

Contract shared with the other prep tools: ``--workers`` processes, a
progress line, resumable (decoded features are cached under ``OUT/.cache``,
each written by rename), per-file errors in ``errors.log``, settings stored
and checked. A bad file stops the run with its name and the fix before
anything is published (``--skip-bad`` leaves such files out instead).
"""
import argparse
import csv
import gzip
import hashlib
import json
import os
import os.path as osp
import re
import shutil
import sys
import time
import wave
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# Sibling tool modules and the repository, also when imported (tests).
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from extraction import (ERROR_LOG, ClipResult, check_settings,  # noqa: E402
                        publish, read_audio, run_jobs)

from crmt_mm.data_prep.fbank import (NUM_MEL_BINS,  # noqa: E402
                                     SAMPLE_RATE, crmt_audio_feature)

NAME = 'fsdd_mnist'
FRAME_NAME = 'img_00001.png'
MAIN_SPLITS = ('train', 'val', 'test')
NUM_CLASSES = 10
#: FSDD's file names: ``{digit}_{speaker}_{take}.wav``.
RECORDING_PATTERN = re.compile(r'^([0-9])_([A-Za-z0-9-]+)_([0-9]+)\.wav$')
#: idx magic numbers (LeCun's format): unsigned bytes, 3 or 1 dimensions.
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
CACHE_DIR = '.cache'
BUILD_DIR = '.build'
META_FILE = 'meta.json'
NORM_FILE = f'{NAME}_norm.json'
PCA_FILE = 'pca.npz'
#: Defaults, and where each comes from (docs/datasets.md, FSDD-MNIST).
AUDIO_FRAMES = 96        # 0.975 s: every recording up to the 99th pct
PCA_VARIANCE = 0.25      # AV-MNIST: 75 % of the image energy removed
VAL_TAKES = 5            # as many validation takes as test takes
IMAGE_SPLIT = (0.6, 0.1, 0.3)
SOURCE_RATE = 8000       # FSDD is recorded at 8 kHz


class InputError(ValueError):
    """Input files that cannot be used; the message names them and the fix.
    """


# --------------------------------------------------------------- recordings
class Recording:
    """One FSDD file: its path and what its name says."""

    __slots__ = ('path', 'digit', 'speaker', 'take')

    def __init__(self, path: str, digit: int, speaker: str,
                 take: int) -> None:
        self.path, self.digit, self.speaker, self.take = \
            path, digit, speaker, take

    @property
    def stem(self) -> str:
        return osp.splitext(osp.basename(self.path))[0]


def list_recordings(fsdd_dir: str) -> List[Recording]:
    """Every ``.wav`` in ``fsdd_dir`` (not recursive), parsed from its name.

    Raises:
        InputError: The folder is missing or holds no ``.wav``, or a
            ``.wav`` name does not read ``{digit}_{speaker}_{take}.wav``.
    """
    if not osp.isdir(fsdd_dir):
        raise InputError(f'FSDD folder {fsdd_dir!r} not found; give the '
                         "dataset's recordings/ folder")
    recordings, bad = [], []
    for name in sorted(os.listdir(fsdd_dir)):
        if not name.lower().endswith('.wav'):
            continue
        match = RECORDING_PATTERN.match(name)
        if match is None:
            bad.append(name)
            continue
        digit, speaker, take = match.groups()
        recordings.append(Recording(osp.join(fsdd_dir, name), int(digit),
                                    speaker, int(take)))
    if bad:
        raise InputError(
            f'{len(bad)} file name(s) in {fsdd_dir} do not read '
            '{digit}_{speaker}_{take}.wav (digit 0-9, speaker letters, '
            'digits or -, take a number): ' + ', '.join(bad[:5]) +
            '; rename them or move them out of the folder')
    if not recordings:
        raise InputError(f'no .wav recordings in {fsdd_dir!r}; give the '
                         "FSDD recordings/ folder")
    return recordings


def read_wav_checked(path: str, source_rate: int) -> Tuple[int, int]:
    """Check that ``path`` is a complete 16-bit PCM mono WAV.

    Args:
        path (str): The file.
        source_rate (int): Expected sample rate in Hz; 0 accepts any.

    Returns:
        tuple[int, int]: (sample rate, number of samples).

    Raises:
        InputError: Empty, not a WAV, truncated, not 16-bit PCM, several
            channels or another sample rate; the message says how to fix it.
    """
    if osp.getsize(path) == 0:
        raise InputError('empty file (0 bytes); re-download or remove it')
    try:
        with wave.open(path, 'rb') as f:
            channels, width = f.getnchannels(), f.getsampwidth()
            rate, frames = f.getframerate(), f.getnframes()
            data = f.readframes(frames)
    except (wave.Error, EOFError) as err:
        raise InputError(f'not a readable PCM WAV ({err}); convert it, e.g. '
                         'sox in.x -b 16 -c 1 out.wav') from err
    if len(data) != frames * channels * width:
        raise InputError(
            f'truncated: the header announces {frames} samples, the file '
            f'holds {len(data) // max(channels * width, 1)}; re-download '
            'or remove it')
    if frames == 0:
        raise InputError('holds no samples; remove it')
    if channels != 1:
        raise InputError(f'{channels} channels, FSDD-MNIST needs mono; mix '
                         'it down, e.g. sox in.wav -c 1 out.wav')
    if width != 2:
        raise InputError(f'{8 * width}-bit samples, expected 16-bit PCM; '
                         'convert it, e.g. sox in.wav -b 16 out.wav')
    if source_rate and rate != source_rate:
        raise InputError(
            f'recorded at {rate} Hz, expected {source_rate} Hz (FSDD); '
            'resample it (sox in.wav -r 8000 out.wav) or pass '
            '--source-rate 0 to accept any rate (every file is resampled '
            f'to {SAMPLE_RATE} Hz anyway)')
    return rate, frames


def feature_seed(seed: int, key: str) -> int:
    """A per-recording seed that does not depend on process or order."""
    digest = hashlib.sha256(f'{seed}:{key}'.encode()).digest()
    return int.from_bytes(digest[:8], 'little')


def extract_recording(job: dict) -> ClipResult:
    """Worker: check, decode and featurise one recording into the cache.

    The cached feature is the reference's normalised fbank (before the
    dataset's own constants), float32 [audio_frames, 128].
    """
    target = job['cache_path']
    if osp.isfile(target):
        return ClipResult(job['clip_id'], 'skipped', 1)
    start = time.perf_counter()
    read_wav_checked(job['path'], job['source_rate'])
    waveform = read_audio(job['path'], SAMPLE_RATE)
    if job['audio_snr'] is not None:
        rng = np.random.default_rng(feature_seed(job['seed'],
                                                 job['clip_id']))
        power = float(np.mean(waveform.astype(np.float64)**2))
        noise_std = np.sqrt(power / 10**(job['audio_snr'] / 10))
        waveform = (waveform + rng.normal(0.0, noise_std, waveform.shape)
                    ).astype(np.float32)
    feature = crmt_audio_feature(waveform, SAMPLE_RATE,
                                 num_frames=job['audio_frames'])
    os.makedirs(osp.dirname(target), exist_ok=True)
    staged = f'{target}.{os.getpid()}.tmp.npy'
    np.save(staged, feature.astype(np.float32))
    os.replace(staged, target)
    return ClipResult(job['clip_id'], 'done', 1, time.perf_counter() - start)


# -------------------------------------------------------------------- MNIST
def _open_idx(path: str) -> bytes:
    opener = gzip.open if path.endswith('.gz') else open
    try:
        with opener(path, 'rb') as f:
            return f.read()
    except (OSError, EOFError) as err:
        raise InputError(f'{path}: cannot be read ({err}); re-download the '
                         'MNIST file') from err


def read_idx(path: str, magic: int) -> np.ndarray:
    """An MNIST idx file as uint8 [N] (labels) or [N, H, W] (images).

    Raises:
        InputError: Wrong magic number or truncated data.
    """
    data = _open_idx(path)
    ndim = 3 if magic == IMAGES_MAGIC else 1
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise InputError(f'{path}: {len(data)} bytes, shorter than the idx '
                         'header; the file is truncated, re-download it')
    found = int.from_bytes(data[:4], 'big')
    if found != magic:
        kind = 'images' if magic == IMAGES_MAGIC else 'labels'
        raise InputError(
            f'{path}: idx magic number {found}, expected {magic} for MNIST '
            f'{kind}; give the {kind} file (e.g. t10k-{kind}-idx'
            f'{ndim}-ubyte.gz) or re-download it')
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big')
                  for i in range(ndim))
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise InputError(
            f'{path}: the header announces {shape} = {size} bytes of data, '
            f'the file holds {len(data) - header}; the file is truncated or '
            'corrupt, re-download it')
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find(mnist_dir: str, stem: str) -> Optional[str]:
    for name in (stem, stem + '.gz'):
        if osp.isfile(osp.join(mnist_dir, name)):
            return osp.join(mnist_dir, name)
    return None


def read_mnist_pair(mnist_dir: str, prefix: str
                    ) -> Optional[Tuple[str, np.ndarray, np.ndarray]]:
    """``(images file, images [N, 28, 28], labels [N])`` of one MNIST set.

    Returns None when neither file of ``prefix`` (``'t10k'``/``'train'``)
    is in the folder.

    Raises:
        InputError: One file of the pair is missing, a file is corrupt, or
            the image and label counts differ.
    """
    images_path = _find(mnist_dir, f'{prefix}-images-idx3-ubyte')
    labels_path = _find(mnist_dir, f'{prefix}-labels-idx1-ubyte')
    if images_path is None and labels_path is None:
        return None
    if images_path is None or labels_path is None:
        missing = f'{prefix}-images-idx3-ubyte' if images_path is None \
            else f'{prefix}-labels-idx1-ubyte'
        raise InputError(f'{mnist_dir}: {missing}[.gz] is missing beside '
                         'its partner file; add it or remove the partner')
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise InputError(
            f'{images_path} holds {len(images)} images but {labels_path} '
            f'{len(labels)} labels; the two files are from different sets, '
            're-download them together')
    if labels.size and labels.max() >= NUM_CLASSES:
        raise InputError(f'{labels_path}: label {int(labels.max())} is not '
                         'a digit 0-9; is this an MNIST label file?')
    return osp.basename(images_path), images, labels


def image_pools(mnist_dir: str, fractions: Sequence[float], seed: int
                ) -> Dict[str, List[tuple]]:
    """Per split, the images ``(file, index, pixels, label)`` it may use.

    With MNIST's training files, train/val come from them (split by the
    ratio of the first two fractions) and test is the t10k set; otherwise
    the t10k set is split per digit by ``fractions``. Seeded, per digit.

    Raises:
        InputError: No t10k files, or a digit missing from a pool.
    """
    test = read_mnist_pair(mnist_dir, 't10k')
    if test is None:
        raise InputError(f'{mnist_dir}: no t10k-images-idx3-ubyte[.gz] / '
                         't10k-labels-idx1-ubyte[.gz]; give the MNIST folder')
    train = read_mnist_pair(mnist_dir, 'train')
    rng = np.random.default_rng(seed)
    pools: Dict[str, list] = {s: [] for s in MAIN_SPLITS}

    def divide(source, splits, shares):
        name, images, labels = source
        shares = np.asarray(shares, np.float64) / sum(shares)
        for digit in range(NUM_CLASSES):
            index = rng.permutation(np.flatnonzero(labels == digit))
            cuts = np.round(np.cumsum(shares)[:-1] * len(index)).astype(int)
            for split, part in zip(splits, np.split(index, cuts)):
                pools[split] += [(name, int(i), images[i], digit)
                                 for i in part]

    if train is None:
        divide(test, MAIN_SPLITS, fractions)
    else:
        divide(train, ('train', 'val'), fractions[:2])
        divide(test, ('test', ), [1.0])
    return pools


def all_images(mnist_dir: str) -> List[tuple]:
    """Every image ``(file, index, pixels, label)`` of an extra test set's
    MNIST folder (t10k and train files)."""
    pool = []
    for prefix in ('t10k', 'train'):
        found = read_mnist_pair(mnist_dir, prefix)
        if found is not None:
            name, images, labels = found
            pool += [(name, i, images[i], int(labels[i]))
                     for i in range(len(images))]
    if not pool:
        raise InputError(f'{mnist_dir}: no MNIST idx files (t10k-* or '
                         'train-*); give an MNIST folder')
    return pool


# ---------------------------------------------------------------------- PCA
def fit_pca(images: np.ndarray, variance: float) -> dict:
    """PCA of uint8 images [N, H, W]: the mean and the leading components
    whose explained variance reaches ``variance`` of the total."""
    x = images.reshape(len(images), -1).astype(np.float64)
    mean = x.mean(axis=0)
    _, singular, vt = np.linalg.svd(x - mean, full_matrices=False)
    explained = singular**2 / np.sum(singular**2)
    count = int(np.searchsorted(np.cumsum(explained), variance - 1e-12) + 1)
    count = min(count, len(explained))
    return dict(mean=mean, components=vt[:count],
                explained=float(np.sum(explained[:count])), count=count,
                shape=images.shape[1:])


def degrade(image: np.ndarray, pca: Optional[dict]) -> np.ndarray:
    """Project a uint8 image on the PCA components and back (uint8)."""
    if pca is None:
        return image
    x = image.reshape(-1).astype(np.float64) - pca['mean']
    back = pca['mean'] + (x @ pca['components'].T) @ pca['components']
    return np.clip(np.rint(back), 0, 255).astype(np.uint8).reshape(
        image.shape)


# -------------------------------------------------------------------- split
def assign_recordings(recordings: Sequence[Recording], split: str,
                      test_speakers: Sequence[str], val_takes: int,
                      seed: int) -> Dict[str, List[Recording]]:
    """Recordings per split (see the module docstring).

    Raises:
        InputError: An unknown test speaker, a speaker split without test
            speakers, or a digit without recordings in a split.
    """
    speakers = sorted({r.speaker for r in recordings})
    if split == 'speaker':
        if not test_speakers:
            raise InputError('--split speaker needs --test-speakers NAME ...'
                             f' (speakers found: {", ".join(speakers)})')
        unknown = sorted(set(test_speakers) - set(speakers))
        if unknown:
            raise InputError(f'--test-speakers {", ".join(unknown)}: no '
                             'such speaker in --fsdd (found: '
                             f'{", ".join(speakers)})')
        if set(test_speakers) == set(speakers):
            raise InputError('--test-speakers names every speaker; keep at '
                             'least one for training')
        is_test = [r.speaker in test_speakers for r in recordings]
    else:
        if test_speakers:
            raise InputError('--test-speakers needs --split speaker')
        is_test = [r.take <= 4 for r in recordings]
    rng = np.random.default_rng(seed)
    groups = defaultdict(list)
    out: Dict[str, List[Recording]] = {s: [] for s in MAIN_SPLITS}
    for recording, test in zip(recordings, is_test):
        if test:
            out['test'].append(recording)
        else:
            groups[(recording.speaker, recording.digit)].append(recording)
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda r: r.take)
        chosen = set(rng.permutation(len(group))[:val_takes].tolist())
        for i, recording in enumerate(group):
            out['val' if i in chosen else 'train'].append(recording)
    for name, members in out.items():
        missing = sorted(set(range(NUM_CLASSES)) - {r.digit for r in members})
        if missing:
            raise InputError(
                f'the {name} split has no recording of digit(s) '
                f'{missing} (--split {split}'
                + (f', --test-speakers {" ".join(test_speakers)}'
                   if split == 'speaker' else '')
                + f', --val-takes {val_takes}); add recordings of those '
                'digits or choose other test speakers / validation takes')
    return out


def pair_images(members: Sequence[Recording], pool: Sequence[tuple],
                split: str, seed: int) -> List[Tuple[Recording, tuple]]:
    """Pair each recording with an image of its digit from ``pool``.

    Images are drawn without replacement in a seeded order; a digit with
    more recordings than images starts a new permutation of its images.

    Raises:
        InputError: The pool has no image of a recording's digit.
    """
    rng = np.random.default_rng(feature_seed(seed, f'pairing:{split}'))
    by_digit = defaultdict(list)
    for item in pool:
        by_digit[item[3]].append(item)
    queues: Dict[int, list] = {}
    pairs = []
    for recording in sorted(members, key=lambda r: r.stem):
        digit = recording.digit
        if not by_digit[digit]:
            raise InputError(f'no image of digit {digit} for the {split} '
                             'split; give MNIST files with every digit')
        if not queues.get(digit):
            order = rng.permutation(len(by_digit[digit]))
            queues[digit] = [by_digit[digit][i] for i in order]
        pairs.append((recording, queues[digit].pop()))
    return pairs


# ------------------------------------------------------------------- output
def cache_path(out_dir: str, clip_id: str) -> str:
    return osp.join(out_dir, CACHE_DIR, 'audio', clip_id + '.npy')


def extract_all(groups: Dict[str, Sequence[Recording]], args,
                key_of) -> None:
    """Fill the feature cache of every recording; fail naming bad files.

    Args:
        groups (dict): Name -> recordings (names only label the progress).
        args: Parsed arguments (workers, audio settings).
        key_of (callable): ``(group, recording) -> cache key``.

    Raises:
        InputError: Some files failed (without ``--skip-bad``).
    """
    jobs = [dict(clip_id=key_of(g, r), path=r.path, out_dir=args.out,
                 cache_path=cache_path(args.out, key_of(g, r)),
                 source_rate=args.source_rate, audio_snr=args.audio_snr,
                 audio_frames=args.audio_frames, seed=args.seed)
            for g, members in groups.items() for r in members]
    start = time.perf_counter()
    results = run_jobs(NAME, extract_recording, jobs, args.out,
                       args.workers)
    done = sum(r.status == 'done' for r in results.values())
    elapsed = time.perf_counter() - start
    if done:
        print(f'[{NAME}] {done} recordings featurised at '
              f'{done / elapsed:.1f} clips/s ({args.workers} worker(s))',
              flush=True)
    failed = {r.clip_id: r.error for r in results.values()
              if r.status == 'failed'}
    if failed and not args.skip_bad:
        paths = {j['clip_id']: j['path'] for j in jobs}
        lines = [f'  {paths[k]}: {v}' for k, v in sorted(failed.items())]
        raise InputError(
            f'{len(failed)} recording(s) cannot be used (all listed in '
            f'{osp.join(args.out, ERROR_LOG)}); fix or remove them, or pass'
            ' --skip-bad to leave them out:\n' + '\n'.join(lines[:10]))
    for group, members in groups.items():
        groups[group] = [r for r in members
                         if key_of(group, r) not in failed]


def write_split(build: str, split: str, pairs, features: np.ndarray,
                pca: Optional[dict]) -> None:
    """Write one split's frames, features, list and sources CSV."""
    import cv2
    rows, sources = [], []
    for (recording, (file, index, pixels, _)), feature in zip(pairs,
                                                               features):
        clip_dir = osp.join(build, 'rawframes', split, recording.stem)
        os.makedirs(clip_dir)
        if not cv2.imwrite(osp.join(clip_dir, FRAME_NAME),
                           degrade(pixels, pca)):
            raise OSError(f'cannot write a frame into {clip_dir!r} (disk '
                          'full or not writable?)')
        audio_dir = osp.join(build, 'audio', split)
        os.makedirs(audio_dir, exist_ok=True)
        np.save(osp.join(audio_dir, recording.stem + '.npy'),
                feature.astype(np.float32))
        rows.append(f'{recording.stem} 1 {recording.digit}\n')
        sources.append(dict(clip_id=recording.stem, label=recording.digit,
                            recording=osp.basename(recording.path),
                            speaker=recording.speaker, take=recording.take,
                            mnist_file=file, mnist_index=index))
    with open(osp.join(build, f'{NAME}_{split}.txt'), 'w') as f:
        f.writelines(rows)
    with open(osp.join(build, f'{NAME}_{split}_sources.csv'), 'w',
              newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(sources[0]))
        writer.writeheader()
        writer.writerows(sources)


def publish_build(build: str, out_dir: str, splits: Sequence[str],
                  files: Sequence[str]) -> None:
    """Move a finished build's split folders and files into ``out_dir``."""
    for split in splits:
        for kind in ('rawframes', 'audio'):
            publish(osp.join(build, kind, split),
                    osp.join(out_dir, kind, split))
        for name in (f'{NAME}_{split}.txt', f'{NAME}_{split}_sources.csv'):
            publish(osp.join(build, name), osp.join(out_dir, name))
    for name in files:
        publish(osp.join(build, name), osp.join(out_dir, name))
    shutil.rmtree(build, ignore_errors=True)


def load_features(out_dir: str, keys: Sequence[str]) -> np.ndarray:
    return np.stack([np.load(cache_path(out_dir, k)) for k in keys])


def prepare_main(args, recordings: List[Recording], settings: dict) -> dict:
    """Build train/val/test unless a complete build of ``settings`` exists.

    Returns:
        dict: The content of ``meta.json``.
    """
    meta_path = osp.join(args.out, META_FILE)
    if osp.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get('settings') == settings:
            print(f'[{NAME}] train/val/test in {args.out} are up to date',
                  flush=True)
            return meta
    # Every check that needs no decoding comes before anything is written.
    splits = assign_recordings(recordings, args.split, args.test_speakers,
                               args.val_takes, args.seed)
    pools = image_pools(args.mnist, args.image_split, args.seed)
    check_settings(args.out, settings)
    if osp.isfile(meta_path):
        os.remove(meta_path)  # a build of other settings, now replaced
    extract_all(splits, args, lambda _, r: r.stem)
    for name, members in splits.items():  # again, after --skip-bad
        if not members:
            raise InputError(f'the {name} split is empty after leaving bad '
                             'files out')
    pca = None
    if args.pca_variance < 1:
        pca = fit_pca(np.stack([item[2] for item in pools['train']]),
                      args.pca_variance)
    raw = {s: load_features(args.out, [r.stem for r in splits[s]])
           for s in MAIN_SPLITS}
    audio_mean = float(raw['train'].mean(dtype=np.float64))
    audio_std = float(raw['train'].std(dtype=np.float64))
    build = osp.join(args.out, BUILD_DIR)
    shutil.rmtree(build, ignore_errors=True)
    for split in MAIN_SPLITS:
        order = sorted(range(len(splits[split])),
                       key=lambda i: splits[split][i].stem)
        members = [splits[split][i] for i in order]
        pairs = pair_images(members, pools[split], split, args.seed)
        feats = (raw[split][order] - audio_mean) / audio_std
        write_split(build, split, pairs, feats, pca)
    train_pixels = np.stack([degrade(item[2], pca)
                             for item in pools['train']])
    norm = dict(
        audio=dict(mean=audio_mean, std=audio_std,
                   note='audio/*/*.npy hold (feature - mean) / std, the '
                   'feature being crmt_audio_feature (reference fbank); '
                   'give the data preprocessor no mean/std for audios'),
        visual=dict(mean=float(train_pixels.mean(dtype=np.float64)),
                    std=float(train_pixels.std(dtype=np.float64)),
                    note='0..255 statistics of the PCA-degraded training '
                    'image pool (grey, same for the 3 decoded channels); '
                    'use as ActionDataPreprocessor mean/std'))
    with open(osp.join(build, NORM_FILE), 'w') as f:
        json.dump(norm, f, indent=2)
    pca_info = None
    if pca is not None:
        np.savez(osp.join(build, PCA_FILE), mean=pca['mean'],
                 components=pca['components'])
        pca_info = dict(components=pca['count'],
                        explained_variance=pca['explained'])
    files = [NORM_FILE] + ([PCA_FILE] if pca is not None else [])
    publish_build(build, args.out, MAIN_SPLITS, files)
    meta = dict(settings=settings, pca=pca_info,
                num_clips={s: len(splits[s]) for s in MAIN_SPLITS},
                speakers={s: sorted({r.speaker for r in splits[s]})
                          for s in MAIN_SPLITS},
                image_pools={s: len(pools[s]) for s in MAIN_SPLITS},
                norm=norm)
    with open(meta_path, 'w') as f:  # last: marks a complete build
        json.dump(meta, f, indent=2)
    return meta


def parse_extra(spec: str) -> Tuple[str, str, str]:
    """``NAME=FSDD_DIR,MNIST_DIR`` -> its three parts."""
    name, sep, dirs = spec.partition('=')
    parts = dirs.split(',')
    if not sep or len(parts) != 2 or not all(parts) or not name:
        raise InputError(f'--extra-test {spec!r}: expected '
                         'NAME=FSDD_DIR,MNIST_DIR')
    if name in MAIN_SPLITS or not re.fullmatch(r'[A-Za-z0-9_-]+', name):
        raise InputError(f'--extra-test {spec!r}: NAME must be letters, '
                         'digits, _ or - and not train/val/test')
    return name, parts[0], parts[1]


def prepare_extra(args, name: str, fsdd_dir: str, mnist_dir: str,
                  meta: dict) -> int:
    """Write one extra test list with the training split's PCA and norm.

    Returns:
        int: Clips written.
    """
    recordings = list_recordings(fsdd_dir)
    groups = {name: recordings}
    extract_all(groups, args, lambda g, r: f'{g}__{r.stem}')
    recordings = groups[name]
    pool = all_images(mnist_dir)
    missing = sorted({r.digit for r in recordings} -
                     {item[3] for item in pool})
    if missing:
        raise InputError(f'--extra-test {name}: {mnist_dir} has no image '
                         f'of digit(s) {missing}')
    pca = None
    if meta['pca'] is not None:
        with np.load(osp.join(args.out, PCA_FILE)) as saved:
            pca = dict(mean=saved['mean'], components=saved['components'])
    norm = meta['norm']['audio']
    recordings = sorted(recordings, key=lambda r: r.stem)
    feats = (load_features(args.out, [f'{name}__{r.stem}'
                                      for r in recordings]) - norm['mean']
             ) / norm['std']
    pairs = pair_images(recordings, pool, name, args.seed)
    build = osp.join(args.out, BUILD_DIR)
    shutil.rmtree(build, ignore_errors=True)
    write_split(build, name, pairs, feats, pca)
    publish_build(build, args.out, [name], [])
    return len(recordings)


# ---------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Pair FSDD recordings with MNIST images of the same '
        'digit (FSDD-MNIST) in the layout AudioVisualDataset reads. See the '
        'module docstring and docs/datasets.md.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--fsdd', required=True,
                        help='folder of {digit}_{speaker}_{take}.wav')
    parser.add_argument('--mnist', required=True,
                        help='folder of MNIST idx files (t10k-*, train-*)')
    parser.add_argument('--out', required=True, help='output data_root')
    parser.add_argument('--split', choices=('standard', 'speaker'),
                        default='standard',
                        help='standard: takes 0-4 are the test set; '
                        'speaker: --test-speakers are the test set')
    parser.add_argument('--test-speakers', nargs='+', default=[],
                        metavar='NAME', help='held-out speakers')
    parser.add_argument('--val-takes', type=int, default=VAL_TAKES,
                        help='validation takes per speaker and digit')
    parser.add_argument('--image-split', type=float, nargs=3,
                        default=list(IMAGE_SPLIT),
                        metavar=('TRAIN', 'VAL', 'TEST'),
                        help='shares of the MNIST images per pool')
    parser.add_argument('--pca-variance', type=float, default=PCA_VARIANCE,
                        help='explained variance the PCA keeps (1 = no '
                        'degradation)')
    parser.add_argument('--audio-snr', type=float, default=None,
                        help='add white noise at this SNR in dB (off)')
    parser.add_argument('--audio-frames', type=int, default=AUDIO_FRAMES,
                        help='fbank frames (10 ms) kept or padded to')
    parser.add_argument('--source-rate', type=int, default=SOURCE_RATE,
                        help='expected WAV sample rate in Hz; 0 = any')
    parser.add_argument('--extra-test', action='append', default=[],
                        metavar='NAME=FSDD_DIR,MNIST_DIR',
                        help='an extra test list (repeatable)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the split, pairing and noise')
    parser.add_argument('--workers', type=int, default=1,
                        help='parallel processes')
    parser.add_argument('--skip-bad', action='store_true',
                        help='leave unusable recordings out (listed in '
                        'errors.log) instead of stopping')
    args = parser.parse_args(argv)
    if args.val_takes < 0:
        parser.error('--val-takes must be >= 0')
    if not 0 < args.pca_variance <= 1:
        parser.error('--pca-variance must be in (0, 1]')
    if args.audio_frames < 1:
        parser.error('--audio-frames must be >= 1')
    if min(args.image_split) <= 0:
        parser.error('--image-split shares must be > 0')
    return args


def settings_of(args, recordings: Sequence[Recording]) -> dict:
    """What determines the train/val/test build (the resume guard)."""
    return dict(
        tool='prepare_fsdd_mnist', split=args.split,
        test_speakers=sorted(args.test_speakers), val_takes=args.val_takes,
        image_split=list(args.image_split), pca_variance=args.pca_variance,
        audio_snr=args.audio_snr, audio_frames=args.audio_frames,
        audio_shape=[args.audio_frames, NUM_MEL_BINS],
        sample_rate=SAMPLE_RATE, source_rate=args.source_rate,
        seed=args.seed, skip_bad=args.skip_bad,
        recordings=len(recordings),
        speakers=sorted({r.speaker for r in recordings}))


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        # Parsed (so validated) before any work.
        extras = [parse_extra(spec) for spec in args.extra_test]
        recordings = list_recordings(args.fsdd)
        meta = prepare_main(args, recordings,
                            settings_of(args, recordings))
        for name, fsdd_dir, mnist_dir in extras:
            count = prepare_extra(args, name, fsdd_dir, mnist_dir, meta)
            print(f'[{NAME}] extra test set {name}: {count} clips',
                  flush=True)
    except InputError as err:
        shutil.rmtree(osp.join(args.out, BUILD_DIR), ignore_errors=True)
        raise SystemExit(f'prepare_fsdd_mnist: {err}') from None
    print(f'[{NAME}] {args.out}: ' + ', '.join(
        f'{meta["num_clips"][s]} {s}' for s in MAIN_SPLITS) +
        f' clips in {time.perf_counter() - start:.1f} s', flush=True)
    return meta


if __name__ == '__main__':
    main()
