from .crmt_recognizer import CRMTRecognizer, NonFiniteLossError
from .modality_encoder import ModalityEncoder
from .stock_branch import StockBranch, resolve_recognizer

__all__ = ['CRMTRecognizer', 'ModalityEncoder', 'NonFiniteLossError',
           'StockBranch', 'resolve_recognizer']
