"""Audio-visual dataset: mmaction2 rawframes plus one audio feature per clip.

mmaction2 1.x dropped its audio-visual dataset, and its loaders fill missing
audio with zeros. This dataset reads a plain rawframe list and checks, at
build time, every file a training run will touch, so a broken dataset fails
in seconds with one message instead of hours later (or never, silently).
Under torch.distributed the file check is sharded across the ranks and the
problems are combined, and a manifest can record a passed check so that a
restart skips it.
"""
import hashlib
import json
import os
import os.path as osp
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from mmaction.datasets import BaseActionDataset
from mmaction.registry import DATASETS
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.fileio import list_from_file
from mmengine.logging import print_log

from .transforms import squeeze_leading_one

#: How many problems the build-time error lists before summarising.
MAX_REPORTED_PROBLEMS = 10
#: Bump when the file check changes, so older manifests are not trusted.
MANIFEST_VERSION = 1

# Problem kinds -> how to fix them (one line each in the error message).
_FIXES = {
    'format': 'each line must read "<frame_dir> <total_frames> <label>" '
              '(whitespace-separated, integers for the last two)',
    'frames': 'total_frames must be >= min_frames; drop those clips from the '
              'list or lower min_frames',
    'label': 'labels must be integers in [0, num_classes); fix the list or '
             'num_classes',
    'duplicate': 'every clip id (frame_dir) may appear only once; remove the '
                 'repeated lines',
    'missing_dir': 'frame directories are looked up under data_prefix["img"]'
                   '; check data_root/data_prefix or re-extract the frames',
    'missing_frame': 'every clip needs frames start_index .. start_index + '
                     'total_frames - 1 named by filename_tmpl; check '
                     'filename_tmpl/start_index or re-extract the frames',
    'missing_audio': 'audio files are looked up as data_prefix["audio"]/'
                     '<frame_dir><audio_suffix>; check data_prefix or '
                     're-extract the audio features',
    'bad_audio': 'audio features must be numeric .npy arrays of shape '
                 'audio_shape (a leading 1 is allowed); re-extract them or '
                 'set audio_shape',
}


@DATASETS.register_module()
class AudioVisualDataset(BaseActionDataset):
    """Rawframe clips paired with a fixed-size audio feature file.

    The annotation file uses mmaction2's rawframe format, one clip per line::

        <frame_dir> <total_frames> <label>

    Frames are read from ``data_prefix['img']/<frame_dir>/`` with
    ``filename_tmpl`` and ``start_index`` (mmaction2's ``RawFrameDecode``),
    the audio feature from ``data_prefix['audio']/<frame_dir><audio_suffix>``
    (``LoadCRMTAudio``). Each data info holds ``frame_dir``,
    ``total_frames``, ``filename_tmpl``, ``start_index``, ``audio_path``,
    ``label`` and ``modality='RGB'``.

    At build time (``full_init``) every line, frame file and audio file is
    checked; all problems are collected and reported together (the first
    :data:`MAX_REPORTED_PROBLEMS`, with line numbers and paths, plus how to
    fix each kind). Nothing is skipped or zero-filled silently.

    The file check is the slow part (VGGSound: ~200k clips of up to 10
    frames). Under ``torch.distributed`` rank r checks clips r, r + W, ...
    and every rank receives all problems (one ``all_gather_object``), so
    each raises the same error. With ``manifest_dir`` a passed check is
    recorded in a manifest keyed by the annotation file (path, size,
    modification time, SHA-1), the ``img``/``audio`` roots (paths and
    modification times) and every option the check depends on; a later
    build with the same key (a restart, or the val/test split of the
    next run) skips the file check. The list itself is always parsed and
    checked. Changing the list or adding/removing entries directly under a
    root changes the key; a frame deleted *inside* an already validated
    clip directory does not, and then fails when it is loaded. Every rank
    must build the dataset (as mmengine's loops do) when distributed.

    Args:
        ann_file (str): Rawframe annotation list.
        pipeline (list[dict | callable]): Data transforms.
        data_prefix (dict): ``img`` (frame root) and ``audio`` (feature
            root) directories; relative paths are joined to ``data_root``.
            Defaults to ``dict(img='', audio='')``.
        filename_tmpl (str): Frame file name template.
            Defaults to ``'img_{:05d}.png'``.
        start_index (int): Index of the first frame file. Defaults to 1.
        audio_suffix (str): Extension appended to ``frame_dir`` to find the
            audio file. Defaults to ``'.npy'``.
        audio_shape (Sequence[int], optional): Expected shape of every audio
            array, e.g. ``(64, 64)`` (frames F x mel bins M); a leading axis
            of size 1 is squeezed before comparing. None skips the check.
            Defaults to ``(64, 64)``.
        num_classes (int, optional): If given, labels must lie in
            ``[0, num_classes)``. Defaults to None (labels must be >= 0).
        min_frames (int): Smallest accepted ``total_frames``. Defaults to 1.
        test_mode (bool): Whether the dataset is for validation/testing.
            Defaults to False.
        manifest_dir (str, optional): directory for the manifests of
            passed file checks (``~`` is expanded; created if missing; an
            unwritable one only logs a warning). Defaults to None (check
            every build).
        **kwargs: Other ``BaseActionDataset`` / ``BaseDataset`` arguments
            (``data_root``, ``lazy_init``, ...).

    Raises:
        FileNotFoundError: The annotation file is missing, or every problem
            found is a missing frame directory, frame file or audio file.
        ValueError: Any other problem (empty list, malformed line, label out
            of range, duplicated clip id, unreadable or mis-shaped audio).
    """

    def __init__(self,
                 ann_file: str,
                 pipeline: List[Union[dict, Callable]],
                 data_prefix: Optional[dict] = None,
                 filename_tmpl: str = 'img_{:05d}.png',
                 start_index: int = 1,
                 audio_suffix: str = '.npy',
                 audio_shape: Optional[Sequence[int]] = (64, 64),
                 num_classes: Optional[int] = None,
                 min_frames: int = 1,
                 test_mode: bool = False,
                 manifest_dir: Optional[str] = None,
                 **kwargs) -> None:
        data_prefix = dict(img='', audio='') if data_prefix is None else \
            dict(data_prefix)
        missing = [k for k in ('img', 'audio') if k not in data_prefix]
        if missing:
            raise ValueError(
                f'AudioVisualDataset: data_prefix lacks the keys {missing}; '
                "pass data_prefix=dict(img='<frame root>', audio='<audio "
                "root>').")
        if num_classes is not None and (isinstance(num_classes, bool) or
                                        not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError(
                f'AudioVisualDataset: num_classes={num_classes!r} must be a '
                'positive integer or None.')
        if not isinstance(min_frames, int) or min_frames < 1:
            raise ValueError(
                f'AudioVisualDataset: min_frames={min_frames!r} must be an '
                'integer >= 1.')
        try:
            filename_tmpl.format(start_index)
        except (IndexError, KeyError, ValueError) as err:
            raise ValueError(
                f'AudioVisualDataset: filename_tmpl={filename_tmpl!r} cannot '
                'format one integer frame index (e.g. use '
                "'img_{:05d}.png').") from err
        self.filename_tmpl = filename_tmpl
        self.audio_suffix = audio_suffix
        self.audio_shape = None if audio_shape is None else tuple(
            int(s) for s in audio_shape)
        self.min_frames = min_frames
        self.manifest_dir = None if manifest_dir is None else \
            osp.expanduser(manifest_dir)
        if kwargs.pop('multi_class', False):
            raise ValueError(
                'AudioVisualDataset supports single-label lists only; drop '
                'multi_class=True.')
        super().__init__(
            ann_file,
            pipeline=pipeline,
            data_prefix=data_prefix,
            test_mode=test_mode,
            num_classes=num_classes,
            start_index=start_index,
            modality='RGB',
            **kwargs)

    # ------------------------------------------------------------------
    def load_data_list(self) -> List[dict]:
        """Parse and validate the annotation list.

        Returns:
            list[dict]: One info dict per clip (see the class docstring).
        """
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'AudioVisualDataset: annotation file {self.ann_file!r} not '
                'found. Check ann_file/data_root, or generate AV-Digits with '
                '`python tools/data/prepare_avdigits.py OUT_DIR`.')
        problems = _Problems()
        data_list, first_line = [], {}
        lines = list_from_file(self.ann_file)
        # osp.join costs more than the rest of the parse of a 200k-line list
        img_root = _root_joiner(self.data_prefix['img'])
        audio_root = _root_joiner(self.data_prefix['audio'])
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            info = self._parse_line(line, lineno, problems, img_root,
                                    audio_root)
            if info is None:
                continue
            clip = info.pop('clip_id')
            if clip in first_line:
                problems.add(
                    'duplicate', lineno, f'clip id {clip!r} already listed '
                    f'on line {first_line[clip]}')
                continue
            first_line[clip] = lineno
            info['lineno'] = lineno
            data_list.append(info)
        if not first_line and not problems:
            raise ValueError(
                f'AudioVisualDataset: annotation file {self.ann_file!r} is '
                'empty; it needs one "<frame_dir> <total_frames> <label>" '
                'line per clip (regenerate it, or point ann_file at the '
                'right list).')
        self._check_all_files(data_list, problems)
        if problems:
            self._raise(problems)
        for info in data_list:
            del info['lineno']
        return data_list

    def _parse_line(self, line: str, lineno: int, problems: '_Problems',
                    img_root: Callable[[str], str],
                    audio_root: Callable[[str], str]) -> Optional[dict]:
        fields = line.split()
        try:
            if len(fields) != 3:
                raise ValueError
            clip, total_frames, label = fields[0], int(fields[1]), int(
                fields[2])
        except ValueError:
            problems.add('format', lineno, f'cannot parse {line.strip()!r}')
            return None
        if total_frames < self.min_frames:
            problems.add(
                'frames', lineno, f'clip {clip!r} has total_frames='
                f'{total_frames} < min_frames={self.min_frames}')
            return None
        if label < 0 or (self.num_classes is not None
                         and label >= self.num_classes):
            bound = '' if self.num_classes is None else \
                f', num_classes={self.num_classes}'
            problems.add('label', lineno,
                         f'clip {clip!r} has label {label} out of range'
                         f'{bound}')
            return None
        return dict(
            clip_id=clip,
            frame_dir=img_root(clip),
            total_frames=total_frames,
            filename_tmpl=self.filename_tmpl,
            start_index=self.start_index,
            audio_path=audio_root(clip + self.audio_suffix),
            label=label,
            modality='RGB')

    def _check_all_files(self, data_list: List[dict],
                         problems: '_Problems') -> None:
        """The file check: skipped on a manifest hit (on every rank),
        sharded across ranks, the problems combined in file order."""
        rank, world = get_dist_info()
        manifest = self._manifest_path() if self.manifest_dir else None
        hit = manifest is not None and osp.isfile(manifest)
        if world > 1:
            hit = all(all_gather_object(hit))
        if hit:
            print_log(f'AudioVisualDataset: files of {self.ann_file!r} '
                      f'validated before (manifest {manifest}); not '
                      're-checked', logger='current')
            return
        local = _Problems()
        for info in data_list[rank::world]:
            self._check_files(info, local)
        found = local.located
        if world > 1:
            found = sorted(item for part in all_gather_object(found)
                           for item in part)
        problems.extend(found)
        if manifest is not None and not problems:
            self._write_manifest(manifest, len(data_list))

    def _manifest_key(self) -> dict:
        def stamp(path):
            try:
                return os.stat(path).st_mtime_ns
            except OSError:
                return None
        sha1 = hashlib.sha1()
        with open(self.ann_file, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                sha1.update(block)
        roots = {k: osp.abspath(self.data_prefix[k]) for k in ('img',
                                                              'audio')}
        return dict(
            version=MANIFEST_VERSION, ann_file=osp.abspath(self.ann_file),
            ann_size=os.path.getsize(self.ann_file),
            ann_mtime_ns=stamp(self.ann_file), ann_sha1=sha1.hexdigest(),
            roots=roots, root_mtimes_ns={k: stamp(v)
                                         for k, v in roots.items()},
            filename_tmpl=self.filename_tmpl, start_index=self.start_index,
            audio_suffix=self.audio_suffix,
            audio_shape=None if self.audio_shape is None else list(
                self.audio_shape),
            num_classes=self.num_classes, min_frames=self.min_frames)

    def _manifest_path(self) -> str:
        text = json.dumps(self._manifest_key(), sort_keys=True)
        name = hashlib.sha1(text.encode()).hexdigest()
        return osp.join(self.manifest_dir, f'{name}.json')

    def _write_manifest(self, path: str, num_clips: int) -> None:
        from crmt_mm.compat import atomic_write
        try:
            os.makedirs(self.manifest_dir, exist_ok=True)
            with atomic_write(path, 'w') as f:
                json.dump(dict(self._manifest_key(), num_clips=num_clips),
                          f, indent=1, sort_keys=True)
        except OSError as err:
            print_log(f'AudioVisualDataset: cannot write the manifest {path}'
                      f' ({err}); the next build checks the files again',
                      logger='current', level=30)

    def _check_files(self, info: dict, problems: '_Problems') -> None:
        lineno, frame_dir = info['lineno'], info['frame_dir']
        # One listdir per clip is much cheaper than a stat per frame.
        try:
            present = set(os.listdir(frame_dir))
        except (FileNotFoundError, NotADirectoryError):
            problems.add('missing_dir', lineno,
                         f'frame directory {frame_dir!r} not found')
            present = None
        if present is not None:
            names = [
                self.filename_tmpl.format(i)
                for i in range(self.start_index, self.start_index +
                               info['total_frames'])
            ]
            absent = [n for n in names if n not in present]
            if absent:
                problems.add(
                    'missing_frame', lineno, f'{len(absent)} of {len(names)} '
                    f'frames missing in {frame_dir!r}, e.g. {absent[0]!r}')
        self._check_audio(info['audio_path'], lineno, problems)

    def _check_audio(self, path: str, lineno: int,
                     problems: '_Problems') -> None:
        if not osp.isfile(path):
            problems.add('missing_audio', lineno,
                         f'audio file {path!r} not found')
            return
        try:
            shape, dtype = _npy_header(path)
        except Exception as err:  # noqa: BLE001  (numpy raises many types)
            problems.add(
                'bad_audio', lineno, f'cannot read audio file {path!r} '
                f'({type(err).__name__}: {err})')
            return
        if not (np.issubdtype(dtype, np.floating)
                or np.issubdtype(dtype, np.integer)):
            problems.add('bad_audio', lineno,
                         f'audio file {path!r} has non-numeric dtype {dtype}')
        elif self.audio_shape is not None and squeeze_leading_one(
                shape, self.audio_shape) != self.audio_shape:
            problems.add(
                'bad_audio', lineno, f'audio file {path!r} has shape '
                f'{shape}, expected {self.audio_shape}')

    def _raise(self, problems: '_Problems') -> None:
        shown = problems.items[:MAX_REPORTED_PROBLEMS]
        text = '\n'.join(f'  - {msg}' for _, msg in shown)
        if len(problems.items) > len(shown):
            text += f'\n  ... and {len(problems.items) - len(shown)} more'
        kinds = list(dict.fromkeys(kind for kind, _ in problems.items))
        fixes = '\n'.join(f'  - {_FIXES[k]}' for k in kinds)
        message = (f'AudioVisualDataset: {len(problems.items)} problem(s) in '
                   f'{self.ann_file!r} (img root '
                   f'{self.data_prefix["img"]!r}, audio root '
                   f'{self.data_prefix["audio"]!r}):\n{text}\nHow to fix:\n'
                   f'{fixes}')
        if set(kinds) <= {'missing_dir', 'missing_frame', 'missing_audio'}:
            raise FileNotFoundError(message)
        raise ValueError(message)


def _root_joiner(root: str) -> Callable[[str], str]:
    """``name -> osp.join(root, name)`` for POSIX paths, without its
    per-call overhead."""
    if not root:
        return lambda name: name
    prefix = root if root.endswith('/') else root + '/'
    return lambda name: name if name.startswith('/') else prefix + name


def _npy_header(path: str) -> Tuple[tuple, np.dtype]:
    """Shape and dtype of a ``.npy`` file from its header alone (several
    times cheaper than ``np.load(mmap_mode='r')``, which maps the file)."""
    with open(path, 'rb') as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f'unsupported .npy format version {version}')
    if dtype.hasobject:
        raise ValueError('the array holds Python objects (pickled data)')
    return tuple(shape), dtype


class _Problems:
    """Problems found while validating, in file order: (kind, message)."""

    def __init__(self) -> None:
        self.located: List[Tuple[int, str, str]] = []

    @property
    def items(self) -> List[Tuple[str, str]]:
        return [(kind, message) for _, kind, message in self.located]

    def add(self, kind: str, lineno: int, message: str) -> None:
        self.located.append((lineno, kind, f'line {lineno}: {message}'))

    def extend(self, located: List[Tuple[int, str, str]]) -> None:
        self.located.extend(located)

    def __bool__(self) -> bool:
        return bool(self.located)
