"""Shared machinery of the dataset preparation tools in ``tools/data/``.

Decoding uses PyAV (``pip install av``), which bundles FFmpeg's libraries, so
no system ``ffmpeg`` is needed. Every tool follows the same contract:

- outputs go to mmaction2's rawframe layout under ``OUT_DIR``;
- each video is processed in a private staging directory and published by
  renames only when complete, so an interrupted run leaves no half-written
  clip behind and a re-run skips every finished clip (resumable);
- a failing video (corrupt file, no stream, silent audio, ...) is written to
  ``OUT_DIR/errors.log`` and left out of the annotation lists; the run goes
  on;
- videos are processed in parallel (``--workers``) with a progress line;
- the extraction settings are stored in ``OUT_DIR/settings.json`` and a
  re-run with different settings is refused, so one output directory never
  mixes clips made in two ways.
"""
import functools
import json
import multiprocessing
import os
import os.path as osp
import shutil
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

#: Frame and flow file names, mmaction2's rawframe convention (1-based).
FRAME_TMPL = 'img_{:05d}.jpg'
FLOW_TMPL = 'flow_{}_{:05d}.jpg'
FLOW_DIRECTIONS = ('x', 'y')
ERROR_LOG = 'errors.log'
SETTINGS_FILE = 'settings.json'
STAGING_DIR = '.staging'


class VideoError(Exception):
    """A video that cannot be used (no stream, silent, too short, ...)."""


@dataclass
class ClipResult:
    """Outcome of one clip.

    Attributes:
        clip_id (str): Clip id (relative output path).
        status (str): ``'done'`` (extracted now), ``'skipped'`` (finished
            by an earlier run) or ``'failed'``.
        num_frames (int): Frames on disk (0 if failed).
        seconds (float): Wall time spent on the clip by its worker.
        error (str): Why it failed ('' otherwise).
    """
    clip_id: str
    status: str
    num_frames: int = 0
    seconds: float = 0.0
    error: str = ''


def import_av():
    """Import PyAV or explain how to install it."""
    try:
        import av
    except ImportError as err:
        raise ImportError(
            'decoding videos needs PyAV: pip install av (or pip install -e '
            "'.[data]'); it bundles FFmpeg, no system ffmpeg is used"
        ) from err
    return av


def count_frames(frame_dir: str,
                 name_of: Callable[[int], str] = FRAME_TMPL.format) -> int:
    """Number of consecutive frames ``name_of(1), ...`` in a directory.

    Args:
        frame_dir (str): Clip directory.
        name_of (callable): Index -> file name. Defaults to
            ``FRAME_TMPL.format``.

    Returns:
        int: n such that frames 1..n exist (0 if the directory is missing).
    """
    try:
        names = set(os.listdir(frame_dir))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    n = 0
    while name_of(n + 1) in names:
        n += 1
    return n


def resize_short_side(height: int, width: int,
                      short_side: Optional[int]) -> Tuple[int, int]:
    """Output size keeping the aspect ratio with the short side given.

    Args:
        height (int): Input height in pixels.
        width (int): Input width in pixels.
        short_side (int, optional): Target short side; None keeps the size.

    Returns:
        tuple[int, int]: (height, width), rounded, at least 1 pixel.
    """
    if short_side is None:
        return height, width
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def sample_frames(path: str, fps: Optional[float] = None,
                  short_side: Optional[int] = None
                  ) -> Iterator[Tuple[np.ndarray, Optional[np.ndarray]]]:
    """Decode a video and yield the frames sampled at ``fps``.

    Frame k is the first decoded frame whose time since the first frame is
    at least ``k / fps`` seconds (what ``ffmpeg -r 1`` keeps for constant
    frame rates), so a 10 s clip gives 10 frames at 1 fps.

    Args:
        path (str): Video file.
        fps (float, optional): Sampling rate in frames per second; None
            keeps every decoded frame. Defaults to None.
        short_side (int, optional): Resize so the short side has this many
            pixels (aspect kept); None keeps the size. Defaults to None.

    Yields:
        tuple[np.ndarray, np.ndarray | None]: the sampled frame and the
        decoded frame right after it (the pair optical flow needs; None for
        the last frame of the video), both BGR uint8 [H, W, 3].

    Raises:
        VideoError: The file has no video stream.
        av.error.FFmpegError: The file cannot be decoded.
    """
    av = import_av()
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoError('no video stream')
        stream = container.streams.video[0]
        stream.thread_type = 'AUTO'
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        size = None
        start, next_time, pending = None, 0.0, None
        for index, frame in enumerate(container.decode(stream)):
            time_s = frame.time if frame.time is not None else index / rate
            start = time_s if start is None else start
            keep = fps is None or time_s - start >= next_time - 1e-6
            if pending is None and not keep:
                continue  # no colour conversion for unused frames
            if size is None:
                size = resize_short_side(frame.height, frame.width,
                                         short_side)
            image = frame.to_ndarray(format='bgr24', height=size[0],
                                     width=size[1])
            if pending is not None:
                yield pending, image
                pending = None
            if keep:
                pending = image
                while fps is not None and \
                        time_s - start >= next_time - 1e-6:
                    next_time += 1.0 / fps
        if pending is not None:
            yield pending, None


def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """Decode the first audio stream's first channel at ``sample_rate``.

    The track is resampled by FFmpeg's resampler to 16-bit PCM and scaled to
    [-1, 1], i.e. exactly what the reference reads from its
    ``ffmpeg -ar 16000`` wav files with ``torchaudio.load``; the reference's
    Kaldi filterbank then uses the first channel.

    Args:
        path (str): Video (or audio) file.
        sample_rate (int): Output sample rate in Hz.

    Returns:
        np.ndarray: float32 [N] samples in [-1, 1].

    Raises:
        VideoError: No audio stream or no samples.
        av.error.FFmpegError: The stream cannot be decoded.
    """
    av = import_av()
    with av.open(path) as container:
        if not container.streams.audio:
            raise VideoError('no audio stream')
        resampler = av.AudioResampler(format='s16p', rate=sample_rate)
        chunks = []
        for frame in container.decode(container.streams.audio[0]):
            chunks += [f.to_ndarray()[0] for f in resampler.resample(frame)]
        chunks += [f.to_ndarray()[0] for f in resampler.resample(None)]
    if not chunks or not sum(len(c) for c in chunks):
        raise VideoError('the audio stream holds no samples')
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def write_jpeg(path: str, image: np.ndarray) -> None:
    """Write an image as JPEG, raising if OpenCV cannot."""
    if not cv2.imwrite(path, image):
        raise OSError(f'cannot write {path!r} (disk full or bad path?)')


def staging_path(out_dir: str, clip_id: str) -> str:
    """This process's private work directory for one clip.

    Inside ``out_dir`` so that publishing is a same-filesystem rename.
    """
    return osp.join(out_dir, STAGING_DIR,
                    f'{os.getpid()}_{clip_id.replace("/", "__")}')


def make_staging(out_dir: str, clip_id: str) -> str:
    """Create (empty) and return :func:`staging_path`."""
    path = staging_path(out_dir, clip_id)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def publish(src: str, dst: str) -> None:
    """Move a finished file or directory into place, replacing ``dst``."""
    os.makedirs(osp.dirname(dst) or '.', exist_ok=True)
    if osp.isdir(dst):
        shutil.rmtree(dst)
    os.replace(src, dst)


def check_settings(out_dir: str, settings: dict) -> None:
    """Refuse to resume into ``out_dir`` with different settings.

    Args:
        out_dir (str): Output directory.
        settings (dict): JSON-serialisable extraction settings.

    Raises:
        ValueError: ``out_dir`` holds outputs made with other settings.
    """
    path = osp.join(out_dir, SETTINGS_FILE)
    if osp.isfile(path):
        with open(path, encoding='utf-8') as f:
            old = json.load(f)
        changed = ', '.join(
            f'{k}: {old.get(k)!r} -> {settings.get(k)!r}'
            for k in sorted(set(old) | set(settings))
            if old.get(k) != settings.get(k))
        if changed:
            raise ValueError(
                f'{out_dir!r} holds clips extracted with other settings '
                f'({changed}); use a new output directory, or delete it to '
                'start over.')
    os.makedirs(out_dir, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(settings, f, indent=2, sort_keys=True)


def _call_safely(worker: Callable[[dict], ClipResult], job: dict
                 ) -> ClipResult:
    """Run ``worker(job)``; turn any exception into a failed result, so one
    broken video never stops the run."""
    start = time.perf_counter()
    try:
        return worker(job)
    except Exception as err:  # noqa: BLE001  (decoders raise many types)
        shutil.rmtree(staging_path(job['out_dir'], job['clip_id']),
                      ignore_errors=True)
        return ClipResult(job['clip_id'], 'failed',
                          seconds=time.perf_counter() - start,
                          error=f'{type(err).__name__}: {err}'.strip())


def _init_worker() -> None:
    # One OpenCV thread per process: the pool already uses every core.
    cv2.setNumThreads(1)


class Progress:
    """Prints ``[name] i/n (p%) done/skipped/failed, rate, ETA`` lines.

    Args:
        name (str): Tag of the lines.
        total (int): Number of clips.
        every (float): Seconds between lines (the last one always prints).
            Defaults to 10.
    """

    def __init__(self, name: str, total: int, every: float = 10.0) -> None:
        self.name, self.total, self.every = name, total, every
        self.counts = dict(done=0, skipped=0, failed=0)
        self.start = self.last = time.monotonic()

    def update(self, result: ClipResult) -> None:
        self.counts[result.status] += 1
        seen = sum(self.counts.values())
        now = time.monotonic()
        if now - self.last < self.every and seen < self.total:
            return
        self.last = now
        rate = seen / max(now - self.start, 1e-9)
        eta = int((self.total - seen) / max(rate, 1e-9))
        print(f'[{self.name}] {seen}/{self.total} '
              f'({100.0 * seen / max(self.total, 1):.1f}%) '
              + ' '.join(f'{k} {v}' for k, v in self.counts.items())
              + f', {rate:.2f} videos/s, ETA '
              f'{eta // 3600}:{eta % 3600 // 60:02d}:{eta % 60:02d}',
              flush=True)


def run_jobs(name: str, worker: Callable[[dict], ClipResult],
             jobs: Sequence[dict], out_dir: str, num_workers: int = 1,
             failures: Sequence[ClipResult] = ()) -> Dict[str, ClipResult]:
    """Run ``worker`` on every job, in parallel, logging failures.

    Args:
        name (str): Tag of the progress lines.
        worker (callable): Top-level function ``job -> ClipResult`` (it
            must be importable by worker processes). Each job is a dict with
            at least ``clip_id`` and ``out_dir``.
        jobs (Sequence[dict]): One job per clip.
        out_dir (str): Output directory (``errors.log`` goes there).
        num_workers (int): Processes; 1 runs in this process. Defaults to 1.
        failures (Sequence[ClipResult]): Clips that failed before any work
            (e.g. video not found), logged with the others.

    Returns:
        dict[str, ClipResult]: Results by clip id, failures included.
    """
    os.makedirs(out_dir, exist_ok=True)
    results = {r.clip_id: r for r in failures}
    progress = Progress(name, len(jobs))
    call = functools.partial(_call_safely, worker)
    log_path = osp.join(out_dir, ERROR_LOG)
    with open(log_path, 'w', encoding='utf-8') as log:
        log.write('# clip_id\treason (this run; fixed clips are retried '
                  'on the next run)\n')
        for result in failures:
            log.write(f'{result.clip_id}\t{result.error}\n')
        if num_workers > 1:
            # Spawned, not forked: children forked from a process whose
            # OpenCV/OpenMP thread pools already ran can deadlock on a lock
            # copied in the held state (seen when a test process had trained
            # a model first).
            context = multiprocessing.get_context('spawn')
            with context.Pool(num_workers, _init_worker) as pool:
                outcomes = pool.imap_unordered(call, jobs)
                _collect(outcomes, results, progress, log)
        else:
            _collect(map(call, jobs), results, progress, log)
    shutil.rmtree(osp.join(out_dir, STAGING_DIR), ignore_errors=True)
    failed = [r for r in results.values() if r.status == 'failed']
    worked = [r.seconds for r in results.values() if r.status == 'done']
    mean = f', {np.mean(worked):.2f} s per extracted video per worker' \
        if worked else ''
    print(f'[{name}] finished in '
          f'{time.monotonic() - progress.start:.1f} s{mean}; '
          f'{len(failed)} failed' +
          (f', listed in {log_path}' if failed else ''), flush=True)
    return results


def _collect(outcomes, results: Dict[str, ClipResult], progress: Progress,
             log) -> None:
    for result in outcomes:
        results[result.clip_id] = result
        progress.update(result)
        if result.status == 'failed':
            log.write(f'{result.clip_id}\t{result.error}\n')
            log.flush()


def write_list(path: str, rows: Sequence[Tuple[str, int, int]]) -> None:
    """Write an mmaction2 rawframe list: ``<clip_id> <total_frames> <label>``.

    Args:
        path (str): Output file.
        rows (Sequence[tuple]): ``(clip_id, total_frames, label)`` rows.
    """
    with open(path, 'w', encoding='utf-8') as f:
        f.writelines(f'{clip} {frames} {label}\n'
                     for clip, frames, label in rows)


def write_lists(out_dir: str, names: Dict[str, str],
                splits: Dict[str, List[Tuple[str, int]]],
                results: Dict[str, ClipResult]) -> Dict[str, int]:
    """Write one list per split with the clips that have frames on disk.

    Args:
        out_dir (str): Output directory.
        names (dict[str, str]): Split -> list file name.
        splits (dict[str, list]): Split -> ``(clip_id, label)`` in input
            order.
        results (dict[str, ClipResult]): Per-clip outcomes.

    Returns:
        dict[str, int]: Clips written per split.
    """
    written = {}
    for split, clips in splits.items():
        rows = [(clip, results[clip].num_frames, label)
                for clip, label in clips
                if results[clip].status != 'failed']
        write_list(osp.join(out_dir, names[split]), rows)
        written[split] = len(rows)
        print(f'{names[split]}: {len(rows)} of {len(clips)} clips',
              flush=True)
    return written
