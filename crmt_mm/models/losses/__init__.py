from .margin_loss import CRMTMarginLoss, margin_regularizer

__all__ = ['CRMTMarginLoss', 'margin_regularizer']
