from .backbones import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .recognizers import *  # noqa: F401,F403
from .train_perturbations import (TRAIN_PERTURBATIONS,  # noqa: F401
                                  build_train_perturbation)
