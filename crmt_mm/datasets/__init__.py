"""Datasets and transforms of crmt_mm (registered into mmaction2).

Offline generators (AV-Digits, CRMT's fbank features) are in
:mod:`crmt_mm.data_prep`.
"""
from .audio_visual_dataset import AudioVisualDataset
from .flow import FuseFlow, RawFlowDecode  # noqa: F401  (registers them)
from .transforms import LoadCRMTAudio

__all__ = ['AudioVisualDataset', 'LoadCRMTAudio']
