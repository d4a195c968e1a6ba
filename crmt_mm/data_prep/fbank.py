"""CRMT's audio features: Kaldi-compatible log-mel filterbanks.

The reference (``pre-processing/extract_audio.py``) calls
torchaudio's port of Kaldi's ``compute-fbank-feats`` with 128 mel bins, a
25 ms Hanning window every 10 ms, no dither, on the mean-removed waveform
(floats in [-1, 1]), pads or trims the result to 1,024 frames with zeros and
normalises it as ``(fbank + 4.503877) / (5.141276 * 2)``.

The filterbank itself comes from ``kaldi-native-fbank`` (a maintained C++
port of Kaldi's feature code, ``pip install kaldi-native-fbank``). One gap
has to be bridged: at 16 kHz the 512-point FFT is too coarse for 128 bins,
so mel bin 3 covers no FFT bin. Kaldi and kaldi-native-fbank refuse such a
configuration; torchaudio, which the reference used, computes it and emits
``log(float32 eps)`` for the empty bin. :func:`kaldi_fbank` therefore runs
kaldi-native-fbank once per contiguous run of non-empty bins, with the mel
range cut at the run's edges (which reproduces those bins exactly), and
fills empty bins with ``log(eps)`` as torchaudio does.
"""
import math
from typing import List, Tuple

import numpy as np

from .mel import hz_to_mel, mel_to_hz

#: Reference normalisation: ``(fbank - FBANK_MEAN) / (2 * FBANK_STD)``.
FBANK_MEAN = -4.503877
FBANK_STD = 5.141276
#: Reference feature size: 1,024 frames (10.24 s at 10 ms) x 128 mel bins.
NUM_FRAMES = 1024
NUM_MEL_BINS = 128
#: Sample rate the waveform is resampled to before the filterbank. The
#: reference reads it from its wav files; the same group's KS/VGGSound wav
#: extraction (OGM-GE, ``pre-processing/VGG&KS/mp4_to_wav.py``) writes
#: 16 kHz. An assumption, not a documented CRMT setting (``docs/datasets.md``).
SAMPLE_RATE = 16000
#: Log energy of a bin with no energy: Kaldi floors energies at float32 eps.
LOG_EPS = math.log(float(np.finfo(np.float32).eps))

_INSTALL_HINT = ('CRMT audio features need kaldi-native-fbank: pip install '
                 "kaldi-native-fbank (or pip install -e '.[data]')")


def padded_window_size(sample_rate: int, frame_length_ms: float) -> int:
    """FFT size Kaldi uses: the window length rounded up to a power of two.

    Args:
        sample_rate (int): Sample rate in Hz.
        frame_length_ms (float): Window length in milliseconds.

    Returns:
        int: FFT size in samples (512 for 25 ms at 16 kHz).
    """
    window = int(sample_rate * 0.001 * frame_length_ms)
    return 1 << (window - 1).bit_length()


def _mel_grid(sample_rate: int, num_mel_bins: int, low_freq: float,
              high_freq: float) -> Tuple[float, float]:
    """Kaldi's mel grid: the lowest edge and the spacing d of the bins."""
    high = high_freq if high_freq > 0 else sample_rate / 2 + high_freq
    mel_low = float(hz_to_mel(low_freq))
    return mel_low, (float(hz_to_mel(high)) - mel_low) / (num_mel_bins + 1)


def nonempty_bin_runs(sample_rate: int, num_mel_bins: int,
                      frame_length_ms: float = 25.0, low_freq: float = 20.0,
                      high_freq: float = 0.0) -> List[Tuple[int, int]]:
    """Contiguous runs of mel bins that cover at least one FFT bin.

    A Kaldi mel bin b spans the open mel interval
    ``(mel_low + b d, mel_low + (b + 2) d)`` with
    ``d = (mel_high - mel_low) / (num_mel_bins + 1)``; it is empty when no
    FFT bin centre ``i * sample_rate / fft_size`` (``i < fft_size / 2``)
    falls inside.

    Args:
        sample_rate (int): Sample rate in Hz.
        num_mel_bins (int): Number of mel bins.
        frame_length_ms (float): Window length in ms. Defaults to 25.
        low_freq (float): Lowest mel-bank frequency in Hz. Defaults to 20.
        high_freq (float): Highest frequency in Hz; <= 0 means Nyquist plus
            this offset (Kaldi's convention). Defaults to 0.

    Returns:
        list[tuple[int, int]]: ``(first, last)`` bin indices (inclusive) of
        each run, in increasing order; ``[(0, 127)]`` when none is empty.
    """
    fft_size = padded_window_size(sample_rate, frame_length_ms)
    mel_low, delta = _mel_grid(sample_rate, num_mel_bins, low_freq,
                               high_freq)
    fft_mels = hz_to_mel(np.arange(fft_size // 2) * sample_rate / fft_size)
    left = mel_low + np.arange(num_mel_bins) * delta
    right = left + 2 * delta
    covered = ((fft_mels[None] > left[:, None]) &
               (fft_mels[None] < right[:, None])).any(axis=1)
    runs, start = [], None
    for b, ok in enumerate(covered):
        if ok and start is None:
            start = b
        elif not ok and start is not None:
            runs.append((start, b - 1))
            start = None
    if start is not None:
        runs.append((start, num_mel_bins - 1))
    return runs


def kaldi_fbank(waveform: np.ndarray, sample_rate: int,
                num_mel_bins: int = NUM_MEL_BINS,
                frame_shift_ms: float = 10.0, frame_length_ms: float = 25.0,
                window_type: str = 'hanning', low_freq: float = 20.0,
                high_freq: float = 0.0) -> np.ndarray:
    """Kaldi log-mel filterbank energies (torchaudio ``kaldi.fbank`` parity).

    Kaldi's defaults otherwise: DC offset removed and pre-emphasis 0.97 per
    frame, ``snip_edges`` framing, power spectrum, natural log floored at
    float32 eps, no energy term, no dither.

    Args:
        waveform (np.ndarray): Mono samples [N], floats (the reference's
            scale is [-1, 1]; log energies shift with the scale).
        sample_rate (int): Sample rate in Hz.
        num_mel_bins (int): Number of mel bins. Defaults to 128.
        frame_shift_ms (float): Hop in ms. Defaults to 10.
        frame_length_ms (float): Window length in ms. Defaults to 25.
        window_type (str): Kaldi window name. Defaults to ``'hanning'``.
        low_freq (float): Lowest mel-bank frequency in Hz. Defaults to 20.
        high_freq (float): Highest frequency in Hz, <= 0 = Nyquist plus this
            offset. Defaults to 0.

    Returns:
        np.ndarray: float32 [F, num_mel_bins] log energies, with
        ``F = 1 + (N - window) // shift`` frames (0 if N < window).

    Raises:
        ImportError: kaldi-native-fbank is not installed.
        ValueError: ``waveform`` is not 1-D.
    """
    try:
        import kaldi_native_fbank as knf
    except ImportError as err:
        raise ImportError(_INSTALL_HINT) from err
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f'kaldi_fbank expects mono samples [N], got shape '
                         f'{waveform.shape}; pick or average a channel.')
    runs = nonempty_bin_runs(sample_rate, num_mel_bins, frame_length_ms,
                             low_freq, high_freq)
    mel_low, delta = _mel_grid(sample_rate, num_mel_bins, low_freq,
                               high_freq)
    parts = []
    for first, last in runs:
        opts = knf.FbankOptions()
        opts.frame_opts.samp_freq = sample_rate
        opts.frame_opts.frame_shift_ms = frame_shift_ms
        opts.frame_opts.frame_length_ms = frame_length_ms
        opts.frame_opts.window_type = window_type
        opts.frame_opts.dither = 0.0
        opts.mel_opts.num_bins = last - first + 1
        # Cutting the mel range at the run's outer edges keeps the bin width
        # d, so these bins are exactly bins first..last of the full bank.
        opts.mel_opts.low_freq = low_freq if first == 0 else float(
            mel_to_hz(mel_low + first * delta))
        opts.mel_opts.high_freq = high_freq if last == num_mel_bins - 1 \
            else float(mel_to_hz(mel_low + (last + 2) * delta))
        opts.use_energy = False
        fbank = knf.OnlineFbank(opts)
        fbank.accept_waveform(sample_rate, waveform)
        fbank.input_finished()
        parts.append([fbank.get_frame(i)
                      for i in range(fbank.num_frames_ready)])
    out = np.full((len(parts[0]), num_mel_bins), LOG_EPS, dtype=np.float32)
    if len(parts[0]):
        for (first, last), frames in zip(runs, parts):
            out[:, first:last + 1] = np.stack(frames)
    return out


def crmt_audio_feature(waveform: np.ndarray, sample_rate: int,
                       num_frames: int = NUM_FRAMES) -> np.ndarray:
    """The reference's normalised audio input for one clip.

    Mean-removed waveform -> :func:`kaldi_fbank` (128 bins) -> zero-padded
    or trimmed to ``num_frames`` -> ``(fbank + 4.503877) / (5.141276 * 2)``.
    Padding happens before normalising, as in the reference, so padded
    frames hold ``4.503877 / 10.282552 ~= 0.438``.

    Args:
        waveform (np.ndarray): Mono samples [N], floats in [-1, 1].
        sample_rate (int): Sample rate in Hz (see :data:`SAMPLE_RATE`).
        num_frames (int): Output frames. Defaults to 1024.

    Returns:
        np.ndarray: float32 [num_frames, 128].
    """
    waveform = np.asarray(waveform, dtype=np.float64)
    fbank = kaldi_fbank((waveform - waveform.mean()).astype(np.float32),
                        sample_rate)[:num_frames]
    out = np.zeros((num_frames, fbank.shape[1]), dtype=np.float32)
    out[:len(fbank)] = fbank
    return (out - FBANK_MEAN) / (FBANK_STD * 2)
