"""Write tiny synthetic videos in the raw layouts the preparation tools read.

Smoke-tests ``prepare_ks_vggsound.py`` and ``prepare_ucf101.py`` (and the
whole training pipeline) without downloading anything; the tests use it.
Each clip is a bright square moving across a dark gradient (so optical flow
is non-zero and known: ``speed`` pixels per frame to the right) with a tone
whose pitch depends on the class::

    python tools/data/make_synthetic_videos.py OUT_DIR --kind ks
    python tools/data/make_synthetic_videos.py OUT_DIR --kind vggsound
    python tools/data/make_synthetic_videos.py OUT_DIR --kind ucf101

``ks`` writes ``OUT_DIR/videos/<clip_id>.mp4`` (H.264 + AAC) and the
reference's list format ``ks_{train,test}.txt`` (``<clip_id> <label>``);
``vggsound`` writes ``OUT_DIR/videos/<ytid>_<start:06d>.mp4`` and
``vggsound.csv`` (``ytid,start,class name,split``); both add three broken
clips to the train list (a corrupt file, a video without audio stream, a
silent one) that the tools must report in ``errors.log``. ``ucf101``
writes ``OUT_DIR/UCF-101/<Class>/v_<Class>_gGG_c01.avi`` (MPEG-4 Part 2, no
audio) and ``OUT_DIR/ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt``
in the official formats.
"""
import argparse
import csv
import os
import os.path as osp
import sys
from typing import Dict, Optional

import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from extraction import import_av  # noqa: E402

KINDS = ('ks', 'vggsound', 'ucf101')
VGGSOUND_CLASSES = ('dog barking', 'playing bagpipes', 'rain on surface')
UCF101_CLASSES = ('ApplyEyeMakeup', 'Biking', 'Diving')
#: Broken train clips and what the tools must say about them.
BROKEN = dict(corrupt='corrupt', noaudio='no audio stream',
              silent='silent audio')


def square_frames(num_frames: int, height: int = 48, width: int = 64,
                  speed: int = 2, seed: int = 0) -> np.ndarray:
    """A 12x12 bright textured square moving ``speed`` px/frame rightwards.

    The texture (fixed random pixels) lets optical flow lock on to it.

    Args:
        num_frames (int): Frames T.
        height (int): Frame height H in pixels. Defaults to 48.
        width (int): Frame width W in pixels. Defaults to 64.
        speed (int): Horizontal motion in pixels per frame. Defaults to 2.
        seed (int): Vertical position and colour. Defaults to 0.

    Returns:
        np.ndarray: BGR uint8 [T, H, W, 3].
    """
    rng = np.random.default_rng(seed)
    top = int(rng.integers(4, height - 16))
    patch = rng.integers(120, 256, size=(12, 12, 3))
    ramp = np.linspace(10, 80, width, dtype=np.float32)
    base = np.repeat(ramp[None, :, None], height, 0).repeat(3, 2)
    frames = np.repeat(base[None], num_frames, 0)
    for t in range(num_frames):
        left = (4 + speed * t) % (width - 12)
        frames[t, top:top + 12, left:left + 12] = patch
    return frames.astype(np.uint8)


def tone(seconds: float, freq: float, sample_rate: int = 22050,
         amplitude: float = 0.3) -> np.ndarray:
    """A stereo sine tone, float32 [2, N] in [-1, 1]."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = amplitude * np.sin(2 * np.pi * freq * t)
    return np.stack([wave, 0.5 * wave]).astype(np.float32)


def write_video(path: str, frames: np.ndarray, fps: int,
                audio: Optional[np.ndarray] = None, sample_rate: int = 22050,
                codec: str = 'libx264') -> None:
    """Encode frames (and an optional stereo track) with PyAV.

    Args:
        path (str): Output file; the extension picks the container.
        frames (np.ndarray): BGR uint8 [T, H, W, 3] (H and W even).
        fps (int): Frame rate.
        audio (np.ndarray, optional): float32 [2, N] samples in [-1, 1],
            encoded as AAC. Defaults to None (no audio stream).
        sample_rate (int): Audio sample rate in Hz. Defaults to 22050.
        codec (str): Video encoder. Defaults to ``'libx264'``.
    """
    av = import_av()
    os.makedirs(osp.dirname(path), exist_ok=True)
    with av.open(path, 'w') as container:
        video = container.add_stream(codec, rate=fps)
        video.height, video.width = frames.shape[1:3]
        video.pix_fmt = 'yuv420p'
        sound = None
        if audio is not None:
            sound = container.add_stream('aac', rate=sample_rate,
                                         layout='stereo')
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image, format='bgr24')
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if sound is not None:
            frame = av.AudioFrame.from_ndarray(audio, format='fltp',
                                               layout='stereo')
            frame.sample_rate = sample_rate
            container.mux(sound.encode(frame))
            container.mux(sound.encode())


def _audio_visual_clip(path: str, label: int, index: int, seconds: float,
                       fps: int, audio: Optional[np.ndarray] = None) -> None:
    frames = square_frames(int(seconds * fps), seed=index)
    if audio is None:
        audio = tone(seconds, 300.0 * (label + 1))
    write_video(path, frames, fps, audio)


def _broken_clip(path: str, kind: str, seconds: float, fps: int) -> None:
    if kind == 'corrupt':
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(np.random.default_rng(0).bytes(4096))
    elif kind == 'noaudio':
        write_video(path, square_frames(int(seconds * fps)), fps)
    else:
        _audio_visual_clip(path, 0, 0, seconds, fps,
                           audio=np.zeros((2, int(seconds * 22050)),
                                          np.float32))


def make_audio_visual(out_dir: str, kind: str, num_train: int = 4,
                      num_test: int = 2, seconds: float = 3.0,
                      fps: int = 8) -> Dict[str, str]:
    """Synthetic Kinetics-Sounds or VGGSound input (see the module doc).

    Args:
        out_dir (str): Output directory.
        kind (str): ``'ks'`` or ``'vggsound'``.
        num_train (int): Good train clips. Defaults to 4.
        num_test (int): Test clips. Defaults to 2.
        seconds (float): Clip length in seconds. Defaults to 3.
        fps (int): Video frame rate. Defaults to 8.

    Returns:
        dict[str, str]: ``videos`` (video directory) and either ``train`` and
        ``test`` (KS lists) or ``csv`` (VGGSound annotation file).
    """
    videos = osp.join(out_dir, 'videos')
    rows = []  # (clip_id, label, split)
    for i in range(num_train + num_test):
        split = 'train' if i < num_train else 'test'
        # VGGSound ids are '<ytid>_<start:06d>'; KS ids just need to be
        # unique.
        clip = f'clip{i:02d}' if kind == 'ks' else f'yt{i:02d}_{10 * i:06d}'
        label = i % 3
        _audio_visual_clip(osp.join(videos, clip + '.mp4'), label, i,
                           seconds, fps)
        rows.append((clip, label, split))
    for name in BROKEN:
        clip = f'{name}_000000'
        _broken_clip(osp.join(videos, clip + '.mp4'), name, seconds, fps)
        rows.append((clip, 0, 'train'))
    paths = dict(videos=videos)
    if kind == 'ks':
        for split in ('train', 'test'):
            paths[split] = osp.join(out_dir, f'ks_{split}.txt')
            with open(paths[split], 'w', encoding='utf-8') as f:
                f.writelines(f'{clip} {label}\n'
                             for clip, label, s in rows if s == split)
    else:
        paths['csv'] = osp.join(out_dir, 'vggsound.csv')
        with open(paths['csv'], 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            for clip, label, split in rows:
                ytid, start = clip.rsplit('_', 1)
                writer.writerow([ytid, int(start), VGGSOUND_CLASSES[label],
                                 split])
    return paths


def make_ucf101(out_dir: str, seconds: float = 1.5,
                fps: int = 8) -> Dict[str, str]:
    """Synthetic UCF101 input: 3 classes x (1 train + 1 test) videos.

    Args:
        out_dir (str): Output directory.
        seconds (float): Clip length in seconds. Defaults to 1.5.
        fps (int): Frame rate. Defaults to 8.

    Returns:
        dict[str, str]: ``videos`` (the ``UCF-101`` root) and ``splits``
        (the ``ucfTrainTestlist`` directory).
    """
    videos = osp.join(out_dir, 'UCF-101')
    splits = osp.join(out_dir, 'ucfTrainTestlist')
    os.makedirs(splits, exist_ok=True)
    train, test = [], []
    for label, name in enumerate(UCF101_CLASSES):
        for group, listing in ((8, train), (1, test)):
            rel = f'{name}/v_{name}_g{group:02d}_c01.avi'
            frames = square_frames(int(seconds * fps), seed=label * 10 +
                                   group, speed=label + 1)
            write_video(osp.join(videos, rel), frames, fps, codec='mpeg4')
            listing.append(f'{rel} {label + 1}' if listing is train else rel)
    with open(osp.join(splits, 'classInd.txt'), 'w') as f:
        f.writelines(f'{i + 1} {n}\n' for i, n in enumerate(UCF101_CLASSES))
    for name, lines in (('trainlist01.txt', train), ('testlist01.txt', test)):
        with open(osp.join(splits, name), 'w') as f:
            f.writelines(line + '\n' for line in lines)
    return dict(videos=videos, splits=splits)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description='Write tiny synthetic videos and annotation files in '
        'the raw layouts that prepare_ks_vggsound.py / prepare_ucf101.py '
        'read.')
    parser.add_argument('out_dir', help='output directory')
    parser.add_argument('--kind', choices=KINDS, required=True,
                        help='which raw layout to write')
    args = parser.parse_args(argv)
    if args.kind == 'ucf101':
        paths = make_ucf101(args.out_dir)
    else:
        paths = make_audio_visual(args.out_dir, args.kind)
    for key, path in paths.items():
        print(f'{key}: {path}')


if __name__ == '__main__':
    main()
