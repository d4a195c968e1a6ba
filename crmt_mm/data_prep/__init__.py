"""Offline data generators and feature extraction (not needed at runtime).

- :mod:`.avdigits`: writes the embedded AV-Digits dataset
  (``prepare_avdigits``) from the shipped espeak-ng word bank in
  ``assets/`` (``load_audio_bank``).
- :mod:`.fbank`: CRMT's Kaldi log-mel features of KS / VGGSound audio.
- :mod:`.mel`: the mel scale and filterbank both of them use.

The runtime datasets and transforms are in :mod:`crmt_mm.datasets`; the
tools in ``tools/data/`` call this package.
"""
from .avdigits import load_audio_bank, prepare_avdigits

__all__ = ['load_audio_bank', 'prepare_avdigits']
