from .crmt_recognizer import CRMTRecognizer, NonFiniteLossError
from .modality_encoder import ModalityEncoder
from .robust_mm_recognizer3d import RobustMMRecognizer3D

__all__ = ['CRMTRecognizer', 'ModalityEncoder', 'NonFiniteLossError',
           'RobustMMRecognizer3D']
