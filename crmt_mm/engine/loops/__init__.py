from .crmt_train_loop import CRMTTrainLoop

__all__ = ['CRMTTrainLoop']
