from .crmt_recognizer import CRMTRecognizer, NonFiniteLossError
from .modality_encoder import ModalityEncoder

__all__ = ['CRMTRecognizer', 'ModalityEncoder', 'NonFiniteLossError']
