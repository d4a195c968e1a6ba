"""Datasets and transforms of crmt_mm (registered into mmaction2)."""
from .audio_visual_dataset import AudioVisualDataset
from .avdigits import load_audio_bank, prepare_avdigits
from .flow import FuseFlow, RawFlowDecode  # noqa: F401  (registers them)
from .transforms import LoadCRMTAudio

__all__ = [
    'AudioVisualDataset', 'LoadCRMTAudio', 'load_audio_bank',
    'prepare_avdigits'
]
