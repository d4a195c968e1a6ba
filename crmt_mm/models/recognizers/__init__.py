from .crmt_recognizer import CRMTRecognizer, NonFiniteLossError
from .modality_encoder import ModalityEncoder
from .robust_mm_recognizer3d import RobustMMRecognizer3D
from .stock_branch import StockBranch, resolve_recognizer

__all__ = ['CRMTRecognizer', 'ModalityEncoder', 'NonFiniteLossError',
           'RobustMMRecognizer3D', 'StockBranch', 'resolve_recognizer']
