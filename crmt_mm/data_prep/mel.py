"""The mel scale and a triangular mel filterbank, for both audio front ends.

One implementation serves the AV-Digits log-mel features
(:func:`mel_filterbank`) and the Kaldi filterbank bridge of CRMT's KS /
VGGSound features (:mod:`crmt_mm.data_prep.fbank`, which locates Kaldi's mel
bins with :func:`hz_to_mel` / :func:`mel_to_hz`).

The scale is ``m(f) = 2595 log10(1 + f / 700)`` (O'Shaughnessy's mel, as
written by HTK). Kaldi writes the same scale as ``1127 ln(1 + f / 700)``:
the two differ by the constant factor ``2595 / (1127 ln 10) = 0.999995``,
and every use here is invariant to such a factor (bin edges equally spaced
in mel, mapped back to Hz; comparisons of mels with mels), so Kaldi's bins
are located exactly up to float64 rounding. The HTK constants are kept
because the AV-Digits files are bit-for-bit the same as those of earlier
crmt_mm versions only with the rounding of this formula.
"""
import numpy as np

__all__ = ['hz_to_mel', 'mel_to_hz', 'mel_filterbank']


def hz_to_mel(hz) -> np.ndarray:
    """Frequency in Hz -> mel, ``2595 log10(1 + f / 700)`` (float64)."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel) -> np.ndarray:
    """Inverse of :func:`hz_to_mel` (mel -> Hz, float64)."""
    return 700.0 * (10.0**(np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float,
                   fmax: float) -> np.ndarray:
    """Triangular mel filterbank with unit peaks, linear in Hz.

    Filter ``j`` rises from edge ``j`` to edge ``j + 1`` and falls to edge
    ``j + 2`` of ``n_mels + 2`` edges equally spaced in mel between ``fmin``
    and ``fmax``, evaluated at the FFT bin frequencies.

    Args:
        sample_rate (int): Sampling rate in Hz.
        n_fft (int): FFT size; the filters act on its ``n_fft // 2 + 1``
            one-sided bins.
        n_mels (int): Number of filters.
        fmin (float): Lower edge of the first filter in Hz.
        fmax (float): Upper edge of the last filter in Hz (<= Nyquist).

    Returns:
        np.ndarray: ``float64`` matrix [n_fft // 2 + 1, n_mels] mapping a
        power spectrum (row vector) to mel-band energies.

    Raises:
        ValueError: a bad frequency range, or a filter that covers no FFT
            bin.
    """
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            f'mel_filterbank: need 0 <= fmin < fmax <= sample_rate / 2, got '
            f'fmin={fmin}, fmax={fmax}, sample_rate={sample_rate}.')
    bin_hz = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges_hz = mel_to_hz(
        np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    # Evaluate each continuous triangle at the bin frequencies.
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    bank = np.maximum(0.0, np.minimum(rising, falling))
    empty = np.flatnonzero(bank.sum(axis=0) == 0)
    if empty.size:
        raise ValueError(
            f'mel_filterbank: filters {empty.tolist()} cover no FFT bin; use '
            'a larger n_fft or fewer mel bins.')
    return bank
