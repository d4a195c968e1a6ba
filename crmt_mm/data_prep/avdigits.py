"""AV-Digits: a small, embedded audio-visual digit dataset.

Each sample pairs a real handwritten digit (scikit-learn's 8x8 ``digits``)
rendered as a short noisy, partly occluded clip with a spoken word of the
same digit taken from a shipped espeak-ng audio bank (see
``assets/README.md``). The generator writes mmaction2's own on-disk formats,
so the standard rawframe pipeline reads the frames unchanged::

    out_dir/
        meta.json                     # generation arguments (cache key)
        avdigits_norm.json            # audio/visual normalisation constants
        avdigits_{train,test}.txt     # '<clip_id> <total_frames> <label>'
        avdigits_{train,test}_sources.csv  # provenance of every clip
        rawframes/{train,test}/<clip_id>/img_00001.png ...  # 8-bit RGB
        audio/{train,test}/<clip_id>.npy   # float32 [64, 64] log-mel

The default knobs are those documented in ``docs/datasets.md`` (section
AV-Digits): the digit stays readable for a person, while the spoken word is
meant to be the easier modality, so that a jointly trained model leans on
audio. The log-mel features also get a per-clip cepstral mean normalisation
(``audio_cmn``), which cancels each synthetic voice's fixed spectral
colouring; it matters because the pairing of images and words is fixed on
disk (see ``prepare_avdigits``).

Everything is a deterministic function of ``seed``: every clip draws its
randomness from its own generator keyed by ``(seed, digit index)``, so a
small subset (``train_per_class``) holds exactly the clips of the full set,
apart from the normalisation constants which come from the written train
split.
"""
import csv
import hashlib
import json
import os
import os.path as osp
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np

from .mel import mel_filterbank

#: Bump when the on-disk layout or the generation recipe changes, so cached
#: outputs of older versions are regenerated instead of silently reused.
FORMAT_VERSION = 1

DEFAULT_BANK_PATH = osp.join(
    osp.dirname(osp.abspath(__file__)), 'assets', 'avdigits_audio_bank.npz')
BANK_TOOL = 'tools/data/make_avdigits_audio_bank.py'
PREPARE_TOOL = 'tools/data/prepare_avdigits.py'

NUM_CLASSES = 10
WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven',
         'eight', 'nine')
#: Images of scikit-learn's digits set that go to the test split (of 1,797).
NUM_TEST_IMAGES = 539
SPLITS = ('train', 'test')

FILENAME_TMPL = 'img_{:05d}.png'
START_INDEX = 1

# Audio front end (8 kHz): 1.04 s window -> 32 ms Hann frames every 16 ms,
# which gives exactly 64 frames, and 64 mel bins between 20 Hz and Nyquist.
SAMPLE_RATE = 8000
WINDOW_SAMPLES = 8320
WIN_LENGTH = 256
HOP_LENGTH = 128
N_FFT = 512
N_MELS = 64
FMIN = 20.0
FMAX = 4000.0
NUM_AUDIO_FRAMES = 64
AUDIO_SHAPE = (NUM_AUDIO_FRAMES, N_MELS)
# Only guards log(0); the 30 dB noise floor is orders of magnitude above it.
LOG_FLOOR = 1e-10

MULAW_MU = 255

_BANK_KEYS = ('audio', 'offsets', 'lengths', 'sample_rate', 'mu', 'words',
              'speaker_variant', 'speaker_accent', 'speaker_speed',
              'speaker_pitch', 'speaker_split')


# --------------------------------------------------------------------------
# 8-bit mu-law codec of the shipped bank
# --------------------------------------------------------------------------
def mulaw_encode(wave: np.ndarray, mu: int = MULAW_MU) -> np.ndarray:
    """Encode a waveform in [-1, 1] as 8-bit mu-law codes.

    Args:
        wave (np.ndarray): Float samples of any shape, nominally in [-1, 1]
            (values outside are clipped).
        mu (int): Compression parameter; 255 is the telephony standard.

    Returns:
        np.ndarray: ``uint8`` codes of the same shape (128 ~ silence).
    """
    x = np.clip(np.asarray(wave, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.round((y + 1.0) * 0.5 * mu).astype(np.uint8)


def mulaw_decode(codes: np.ndarray, mu: int = MULAW_MU) -> np.ndarray:
    """Decode 8-bit mu-law codes back to float samples in [-1, 1].

    Args:
        codes (np.ndarray): ``uint8`` codes from :func:`mulaw_encode`.
        mu (int): The parameter used for encoding.

    Returns:
        np.ndarray: ``float32`` samples of the same shape.
    """
    y = np.asarray(codes, dtype=np.float64) / mu * 2.0 - 1.0
    x = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu
    return x.astype(np.float32)


# --------------------------------------------------------------------------
# Audio bank
# --------------------------------------------------------------------------
def load_audio_bank(path: Optional[str] = None) -> dict:
    """Load and decode the espeak-ng word bank.

    Args:
        path (str, optional): ``.npz`` written by
            ``tools/data/make_avdigits_audio_bank.py``. Defaults to the
            shipped ``crmt_mm/data_prep/assets/avdigits_audio_bank.npz``.

    Returns:
        dict: ``waves`` (list over speakers of lists over the 10 digits of
        float32 waveforms at ``sample_rate`` Hz, each shorter than the 1.04 s
        window), ``sample_rate`` (int), ``split`` (np.ndarray of 'train' /
        'test' per speaker), ``variant``, ``accent``, ``speed``, ``pitch``
        ``voice`` (per-speaker metadata arrays) and ``sha256`` of the file.
    """
    path = DEFAULT_BANK_PATH if path is None else path
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'AV-Digits audio bank {path!r} not found. It ships with '
            f'crmt_mm; regenerate it with `python {BANK_TOOL}` or pass '
            '`bank_path` pointing to an existing bank.')
    sha256 = _sha256(path)
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in _BANK_KEYS if k not in data.files]
        if missing:
            raise ValueError(
                f'Audio bank {path!r} lacks the keys {missing}; it was not '
                f'written by {BANK_TOOL}. Regenerate it with that tool.')
        bank = {k: data[k] for k in _BANK_KEYS}
        # The exact espeak-ng voice string; informational only.
        voice = data['speaker_voice'] if 'speaker_voice' in data.files \
            else bank['speaker_variant']
    sample_rate = int(bank['sample_rate'])
    if sample_rate != SAMPLE_RATE:
        raise ValueError(
            f'Audio bank {path!r} is sampled at {sample_rate} Hz but AV-Digits '
            f'features assume {SAMPLE_RATE} Hz. Regenerate it with '
            f'{BANK_TOOL}.')
    if tuple(bank['words']) != WORDS:
        raise ValueError(
            f'Audio bank {path!r} holds the words {tuple(bank["words"])}, '
            f'expected {WORDS} in this order. Regenerate it with {BANK_TOOL}.')
    offsets, lengths = bank['offsets'], bank['lengths']
    num_speakers = len(bank['speaker_split'])
    if offsets.shape != (num_speakers, NUM_CLASSES) or (
            lengths.shape != offsets.shape):
        raise ValueError(
            f'Audio bank {path!r}: offsets/lengths have shapes '
            f'{offsets.shape}/{lengths.shape}, expected ({num_speakers}, '
            f'{NUM_CLASSES}). Regenerate it with {BANK_TOOL}.')
    if lengths.min() <= 0 or lengths.max() > WINDOW_SAMPLES or (
            (offsets + lengths).max() > len(bank['audio'])):
        raise ValueError(
            f'Audio bank {path!r}: word lengths must lie in '
            f'(0, {WINDOW_SAMPLES}] samples and inside the audio array. '
            f'Regenerate it with {BANK_TOOL}.')
    for split in SPLITS:
        if not np.any(bank['speaker_split'] == split):
            raise ValueError(
                f'Audio bank {path!r} has no {split!r} speakers. Regenerate '
                f'it with {BANK_TOOL}.')
    audio = mulaw_decode(bank['audio'], int(bank['mu']))
    waves = [[audio[o:o + n] for o, n in zip(offs, lens)]
             for offs, lens in zip(offsets, lengths)]
    return dict(
        waves=waves,
        sample_rate=sample_rate,
        split=bank['speaker_split'],
        variant=bank['speaker_variant'],
        voice=voice,
        accent=bank['speaker_accent'],
        speed=bank['speaker_speed'],
        pitch=bank['speaker_pitch'],
        sha256=sha256)


def _sha256(path: str) -> str:
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


# --------------------------------------------------------------------------
# Log-mel features (numpy only)
# --------------------------------------------------------------------------
def log_mel_spectrogram(waves: np.ndarray,
                        sample_rate: int = SAMPLE_RATE,
                        win_length: int = WIN_LENGTH,
                        hop_length: int = HOP_LENGTH,
                        n_fft: int = N_FFT,
                        n_mels: int = N_MELS,
                        fmin: float = FMIN,
                        fmax: float = FMAX,
                        num_frames: int = NUM_AUDIO_FRAMES,
                        chunk: int = 128) -> np.ndarray:
    """Natural-log mel power spectrogram of a batch of waveforms.

    Frames are taken without centre padding (frame ``t`` covers samples
    ``[t * hop, t * hop + win)``), Hann-windowed and zero-padded to ``n_fft``.
    The result is cropped or padded (with each clip's minimum, i.e. its
    quietest level) to ``num_frames``.

    Args:
        waves (np.ndarray): Waveforms [N, S], float, in [-1, 1].
        sample_rate (int): Sampling rate in Hz.
        win_length (int): Window length in samples (256 = 32 ms at 8 kHz).
        hop_length (int): Hop in samples (128 = 16 ms at 8 kHz).
        n_fft (int): FFT size (>= win_length).
        n_mels (int): Mel bins.
        fmin (float): Lowest mel edge in Hz.
        fmax (float): Highest mel edge in Hz.
        num_frames (int): Output frames F.
        chunk (int): Clips per FFT batch (bounds the memory used).

    Returns:
        np.ndarray: ``float32`` [N, F, n_mels] (frames x mel bins), log of
        power with a floor of 1e-10.
    """
    waves = np.asarray(waves, dtype=np.float64)
    if waves.ndim != 2 or waves.shape[1] < win_length:
        raise ValueError(
            f'log_mel_spectrogram: expected waves [N, S] with S >= '
            f'{win_length}, got shape {waves.shape}.')
    if n_fft < win_length:
        raise ValueError(
            f'log_mel_spectrogram: n_fft={n_fft} must be >= '
            f'win_length={win_length}.')
    fbank = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    # Periodic Hann window, the STFT convention (np.hanning is symmetric).
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) /
                                win_length)
    out = []
    for start in range(0, len(waves), chunk):
        frames = np.lib.stride_tricks.sliding_window_view(
            waves[start:start + chunk], win_length, axis=1)[:, ::hop_length]
        spec = np.fft.rfft(frames * window, n=n_fft, axis=-1)
        power = spec.real**2 + spec.imag**2
        out.append(np.log(power @ fbank + LOG_FLOOR))
    feats = np.concatenate(out, axis=0)
    if feats.shape[1] >= num_frames:
        feats = feats[:, :num_frames]
    else:
        pad = np.broadcast_to(
            feats.min(axis=(1, 2), keepdims=True),
            (len(feats), num_frames - feats.shape[1], n_mels))
        feats = np.concatenate([feats, pad], axis=1)
    return feats.astype(np.float32)


# --------------------------------------------------------------------------
# Visual clips
# --------------------------------------------------------------------------
def visual_range(noise_sigma: float) -> Tuple[float, float]:
    """Intensity interval mapped linearly onto the PNG's 0..255.

    Covers +-3 sigma of noise around background (0) and ink (1), so clipping
    touches ~0.1 % of the pixels and 8-bit quantisation (steps of
    (1 + 6 sigma) / 255) stays far below the noise.

    Args:
        noise_sigma (float): Std of the pixel noise in digit-intensity units.

    Returns:
        tuple[float, float]: ``(lo, hi)`` in digit-intensity units.
    """
    return -3.0 * noise_sigma, 1.0 + 3.0 * noise_sigma


def upsample_digits(images: np.ndarray, image_size: int) -> np.ndarray:
    """Bilinearly upsample 8x8 digits in [0, 1] to ``image_size`` squared.

    Args:
        images (np.ndarray): [N, 8, 8] intensities in [0, 1].
        image_size (int): Output side length in pixels.

    Returns:
        np.ndarray: ``float64`` [N, image_size, image_size] in [0, 1].
    """
    from scipy.ndimage import zoom
    _, h, w = images.shape
    # grid_mode treats pixels as areas, so the 8 input pixels map onto the
    # whole output width instead of onto its pixel centres only.
    out = zoom(images, (1, image_size / h, image_size / w), order=1,
               mode='nearest', grid_mode=True)
    return np.clip(out, 0.0, 1.0)


def render_clip(digit: np.ndarray, rng: np.random.Generator,
                num_frames: int, max_shift: int, noise_sigma: float,
                square_size: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Render one clip of a digit: shifted frames, noise, one occluder.

    Args:
        digit (np.ndarray): Upsampled digit [H, W] in [0, 1].
        rng (np.random.Generator): The clip's generator.
        num_frames (int): Frames T.
        max_shift (int): Per-frame integer shift drawn uniformly from
            ``[-max_shift, max_shift]`` pixels in x and y (zero fill).
        noise_sigma (float): Std of i.i.d. Gaussian pixel noise, in units of
            the digit's [0, 1] intensity.
        square_size (int): Side of the blank square, in pixels; placed at the
            same position on every frame, after the noise (a visible flat
            occluder at background level). 0 disables it.

    Returns:
        tuple: frames ``float64`` [T, H, W] in intensity units and the
        square's top-left corner ``(y, x)``.
    """
    h, w = digit.shape
    frames = np.zeros((num_frames, h, w))
    shifts = rng.integers(-max_shift, max_shift + 1, size=(num_frames, 2))
    for t, (dy, dx) in enumerate(shifts):
        frames[t, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            digit[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    frames += rng.normal(0.0, noise_sigma, size=frames.shape)
    y0 = int(rng.integers(0, h - square_size + 1))
    x0 = int(rng.integers(0, w - square_size + 1))
    if square_size > 0:
        frames[:, y0:y0 + square_size, x0:x0 + square_size] = 0.0
    return frames, (y0, x0)


def place_word(word: np.ndarray, rng: np.random.Generator,
               snr_db: float) -> Tuple[np.ndarray, int]:
    """Put a word at a random onset in the 1.04 s window and add noise.

    Args:
        word (np.ndarray): Waveform of the word (<= 8,320 samples).
        rng (np.random.Generator): The clip's generator.
        snr_db (float): Ratio of the word's mean power (over its own
            duration) to the white-noise power, in dB.

    Returns:
        tuple: ``float64`` window [8320] and the onset in samples.
    """
    onset = int(rng.integers(0, WINDOW_SAMPLES - len(word) + 1))
    window = np.zeros(WINDOW_SAMPLES)
    window[onset:onset + len(word)] = word
    noise_std = np.sqrt(np.mean(np.square(word, dtype=np.float64)) /
                        10.0**(snr_db / 10.0))
    window += rng.normal(0.0, noise_std, size=WINDOW_SAMPLES)
    return window, onset


# --------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------
def stratified_split(labels: np.ndarray, num_test: int,
                     rng: np.random.Generator
                     ) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Seeded stratified split with an exact test size.

    Per-class test counts follow the class proportions, the leftover from
    rounding going to the classes with the largest remainders.

    Args:
        labels (np.ndarray): Integer labels [N] in [0, K).
        num_test (int): Total number of test items.
        rng (np.random.Generator): Generator for the permutations.

    Returns:
        tuple: per-class lists ``(train_idx, test_idx)``; entry ``k`` holds
        the shuffled indices of class ``k``.
    """
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    exact = counts * num_test / len(labels)
    n_test = np.floor(exact).astype(int)
    by_remainder = np.argsort(-(exact - n_test), kind='stable')
    n_test[by_remainder[:num_test - n_test.sum()]] += 1
    train, test = [], []
    for k in range(NUM_CLASSES):
        perm = rng.permutation(np.flatnonzero(labels == k))
        test.append(perm[:n_test[k]])
        train.append(perm[n_test[k]:])
    return train, test


def _take_per_class(per_class: List[np.ndarray], limit: Optional[int],
                    split: str, arg: str) -> np.ndarray:
    if limit is not None:
        available = min(len(idx) for idx in per_class)
        if isinstance(limit, bool) or not isinstance(
                limit, (int, np.integer)) or not 1 <= limit <= available:
            raise ValueError(
                f'prepare_avdigits: {arg}={limit!r} must be an integer in '
                f'[1, {available}] (the smallest class of the {split} split '
                'has that many images), or None for all.')
        per_class = [idx[:limit] for idx in per_class]
    # Sorted by scikit-learn index so list files read in a stable order.
    return np.sort(np.concatenate(per_class))


# --------------------------------------------------------------------------
# Preparation
# --------------------------------------------------------------------------
def _owned_paths(out_dir: str) -> List[str]:
    """Everything :func:`prepare_avdigits` writes (and may delete)."""
    names = ['meta.json', 'avdigits_norm.json', 'rawframes', 'audio']
    for split in SPLITS:
        names += [f'avdigits_{split}.txt', f'avdigits_{split}_sources.csv']
    return [osp.join(out_dir, n) for n in names]


def _summary(out_dir: str, norm: dict, counts: Dict[str, int],
             skipped: bool) -> dict:
    return dict(
        out_dir=out_dir,
        ann_files={s: osp.join(out_dir, f'avdigits_{s}.txt')
                   for s in SPLITS},
        data_prefix={
            s: dict(img=osp.join(out_dir, 'rawframes', s),
                    audio=osp.join(out_dir, 'audio', s))
            for s in SPLITS
        },
        num_clips=counts,
        norm=norm,
        skipped=skipped)


def prepare_avdigits(out_dir: str,
                     seed: int = 0,
                     train_per_class: Optional[int] = None,
                     test_per_class: Optional[int] = None,
                     bank_path: Optional[str] = None,
                     num_frames: int = 3,
                     image_size: int = 32,
                     max_shift: int = 2,
                     noise_sigma: float = 0.5,
                     square_size: int = 18,
                     snr_db: float = 30.0,
                     audio_cmn: bool = True,
                     force: bool = False) -> dict:
    """Write AV-Digits to ``out_dir`` in mmaction2's rawframe layout.

    Visual: scikit-learn's 1,797 digits, split 1,258 train / 539 test
    (stratified, seeded); each becomes ``num_frames`` 8-bit RGB PNG frames
    (grey replicated) of ``image_size`` squared pixels under
    ``rawframes/<split>/<clip_id>/img_00001.png ...``. Pixel value ``p``
    encodes the intensity ``lo + p / 255 * (hi - lo)`` with
    ``(lo, hi) = visual_range(noise_sigma)``.

    Audio: every clip gets the same digit spoken by a speaker of the same
    split of the bank (test voices are unseen in training), at a random onset
    in a 1.04 s window with white noise at ``snr_db``; the log-mel feature
    [64 frames, 64 mel] has, with ``audio_cmn``, each mel bin's mean over the
    clip's frames removed, is then normalised with the train split's scalar
    mean and std (``avdigits_norm.json``) and stored as float32 under
    ``audio/<split>/<clip_id>.npy``.

    Annotation lists ``avdigits_<split>.txt`` hold
    ``<clip_id> <total_frames> <label>`` with clip ids relative to both
    ``rawframes/<split>`` and ``audio/<split>``.

    The call is cached: if ``meta.json`` records the same arguments (and the
    same bank file), nothing is written. Otherwise the outputs listed in the
    layout above are deleted and regenerated; other files in ``out_dir`` are
    left alone. Run it from a single process (e.g. rank 0) before building
    datasets.

    Args:
        out_dir (str): Output directory (created if missing).
        seed (int): Seed of the split, pairing, shifts, noise and occluders.
        train_per_class (int, optional): Keep only this many train clips per
            class (tiny subsets for tests). None keeps all.
        test_per_class (int, optional): Same for the test split.
        bank_path (str, optional): Audio bank; defaults to the shipped one.
        num_frames (int): Frames per clip.
        image_size (int): Frame side in pixels.
        max_shift (int): Max per-frame shift in pixels.
        noise_sigma (float): Pixel noise std in digit-intensity units.
        square_size (int): Side of the blank square in pixels (0 = none).
        snr_db (float): Audio SNR in dB.
        audio_cmn (bool): Subtract every clip's per-mel-bin mean over time
            (cepstral mean normalisation) before the global normalisation.
        force (bool): Regenerate even if a matching output exists.

    Returns:
        dict: ``out_dir``, ``ann_files`` and ``data_prefix`` per split,
        ``num_clips`` per split, ``norm`` (the content of
        ``avdigits_norm.json``) and ``skipped`` (True if the cache was hit).
    """
    for name, value, low in (('num_frames', num_frames, 1),
                             ('image_size', image_size, 8),
                             ('max_shift', max_shift, 0),
                             ('square_size', square_size, 0)):
        if isinstance(value, bool) or not isinstance(
                value, (int, np.integer)) or value < low:
            raise ValueError(
                f'prepare_avdigits: {name}={value!r} must be an integer '
                f'>= {low}.')
    if square_size > image_size:
        raise ValueError(
            f'prepare_avdigits: square_size={square_size} exceeds '
            f'image_size={image_size}; use a smaller square.')
    if not noise_sigma >= 0:
        raise ValueError(
            f'prepare_avdigits: noise_sigma={noise_sigma!r} must be >= 0.')

    out_dir = osp.abspath(out_dir)
    bank_path = osp.abspath(DEFAULT_BANK_PATH if bank_path is None else
                            bank_path)
    if not osp.isfile(bank_path):
        # load_audio_bank raises the explanatory error.
        load_audio_bank(bank_path)
    meta = dict(
        format_version=FORMAT_VERSION, seed=int(seed),
        train_per_class=train_per_class, test_per_class=test_per_class,
        num_frames=num_frames, image_size=image_size, max_shift=max_shift,
        noise_sigma=float(noise_sigma), square_size=square_size,
        snr_db=float(snr_db), audio_cmn=bool(audio_cmn), bank_sha256=_sha256(bank_path))

    meta_path = osp.join(out_dir, 'meta.json')
    norm_path = osp.join(out_dir, 'avdigits_norm.json')
    if not force and osp.isfile(meta_path) and osp.isfile(norm_path):
        with open(meta_path) as f:
            old = json.load(f)
        if old.get('args') == meta and all(
                osp.exists(p) for p in _owned_paths(out_dir)):
            with open(norm_path) as f:
                norm = json.load(f)
            return _summary(out_dir, norm, old['num_clips'], skipped=True)

    # Stale or partial output: remove only what this function owns.
    for path in _owned_paths(out_dir):
        if osp.isdir(path):
            shutil.rmtree(path)
        elif osp.exists(path):
            os.remove(path)
    os.makedirs(out_dir, exist_ok=True)

    from sklearn.datasets import load_digits
    bank = load_audio_bank(bank_path)
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    # scikit-learn's digits are integers 0..16.
    images = upsample_digits(digits.images / 16.0, image_size)
    train_pc, test_pc = stratified_split(
        labels, NUM_TEST_IMAGES, np.random.default_rng([seed, 1]))
    chosen = dict(
        train=_take_per_class(train_pc, train_per_class, 'train',
                              'train_per_class'),
        test=_take_per_class(test_pc, test_per_class, 'test',
                             'test_per_class'))

    lo, hi = visual_range(noise_sigma)
    frames_u8, waves, sources = {}, {}, {}
    for split, indices in chosen.items():
        speakers = np.flatnonzero(bank['split'] == split)
        clips, split_waves, rows = [], [], []
        for idx in indices:
            # One generator per image, so subsets reproduce the full set.
            rng = np.random.default_rng([seed, 2, int(idx)])
            label = int(labels[idx])
            frames, (sq_y, sq_x) = render_clip(images[idx], rng, num_frames,
                                               max_shift, noise_sigma,
                                               square_size)
            pix = np.round((frames - lo) / (hi - lo) * 255.0)
            clips.append(np.clip(pix, 0, 255).astype(np.uint8))
            speaker = int(rng.choice(speakers))
            wave, onset = place_word(bank['waves'][speaker][label], rng,
                                     snr_db)
            split_waves.append(wave)
            rows.append(dict(
                clip_id=f'{split}_{idx:04d}', digit_index=int(idx),
                label=label, speaker=speaker,
                speaker_variant=str(bank['variant'][speaker]),
                speaker_accent=str(bank['accent'][speaker]),
                onset_samples=onset, square_y=sq_y, square_x=sq_x))
        frames_u8[split] = np.stack(clips)
        waves[split] = np.stack(split_waves)
        sources[split] = rows

    feats = {s: log_mel_spectrogram(waves[s]) for s in SPLITS}
    if audio_cmn:
        # Per-clip mean over time of every mel bin removed (cepstral mean
        # normalisation): cancels each voice's fixed spectral colouring
        # (espeak-ng variants differ in EQ "tone" and formant gains), so that
        # the unseen test voices look like the training voices.
        feats = {s: f - f.mean(axis=1, keepdims=True)
                 for s, f in feats.items()}
    # Scalar constants from the train split only, applied to both splits.
    mean = float(feats['train'].mean(dtype=np.float64))
    std = float(feats['train'].std(dtype=np.float64))
    vis_mean = float(frames_u8['train'].mean(dtype=np.float64))
    vis_std = float(frames_u8['train'].std(dtype=np.float64))
    norm = dict(
        audio=dict(
            mean=mean, std=std,
            note='audio/*.npy already hold (log_mel - mean) / std; give '
            'the data preprocessor no mean/std for audios'),
        visual=dict(
            mean=vis_mean, std=vis_std, intensity_range=[lo, hi],
            note='0..255 pixel statistics of the train PNGs (same for the '
            '3 channels); use as ActionDataPreprocessor mean/std'))

    for split in SPLITS:
        frame_root = osp.join(out_dir, 'rawframes', split)
        audio_root = osp.join(out_dir, 'audio', split)
        os.makedirs(audio_root)
        split_feats = (feats[split] - mean) / std
        lines = []
        for row, clip, feat in zip(sources[split], frames_u8[split],
                                   split_feats):
            clip_dir = osp.join(frame_root, row['clip_id'])
            os.makedirs(clip_dir)
            for t, frame in enumerate(clip):
                _write_png(
                    osp.join(clip_dir, FILENAME_TMPL.format(START_INDEX + t)),
                    frame)
            np.save(osp.join(audio_root, row['clip_id'] + '.npy'),
                    feat.astype(np.float32))
            lines.append(f'{row["clip_id"]} {num_frames} {row["label"]}\n')
        with open(osp.join(out_dir, f'avdigits_{split}.txt'), 'w') as f:
            f.writelines(lines)
        with open(osp.join(out_dir, f'avdigits_{split}_sources.csv'), 'w',
                  newline='') as f:
            writer = csv.DictWriter(f, fieldnames=list(sources[split][0]))
            writer.writeheader()
            writer.writerows(sources[split])

    counts = {s: len(chosen[s]) for s in SPLITS}
    with open(norm_path, 'w') as f:
        json.dump(norm, f, indent=2)
    # Written last: its presence marks a complete output.
    with open(meta_path, 'w') as f:
        json.dump(dict(args=meta, num_clips=counts), f, indent=2)
    return _summary(out_dir, norm, counts, skipped=False)


def _write_png(path: str, grey: np.ndarray) -> None:
    """Write a grey uint8 [H, W] frame as an RGB PNG (3 equal channels)."""
    import cv2
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if not cv2.imwrite(path, rgb):
        raise OSError(f'Could not write frame {path!r}; check that the '
                      'directory is writable and the disk is not full.')


__all__ = [
    'AUDIO_SHAPE', 'DEFAULT_BANK_PATH', 'FILENAME_TMPL', 'NUM_CLASSES',
    'START_INDEX', 'WORDS', 'load_audio_bank', 'log_mel_spectrogram',
    'mulaw_decode', 'mulaw_encode', 'prepare_avdigits'
]
