"""The compatibility fixes applied by ``import crmt_mm``."""
import crmt_mm  # noqa: F401


def test_mmaction_models_import_and_register_all_modules():
    from mmaction.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    from mmaction.models.localizers import DRN
    from mmaction.registry import MODELS
    assert 'ResNet' in MODELS.module_dict
    assert 'CRMTRecognizer' in MODELS.module_dict
    try:
        DRN()
    except ImportError as err:
        assert 'mmaction2#2714' in str(err)


def test_every_crmt_module_is_registered():
    from mmaction.registry import DATASETS, HOOKS, LOOPS, METRICS, MODELS
    from mmaction.registry import TRANSFORMS
    expected = [(MODELS, ['CRMTRecognizer', 'CRMTHead', 'ConcatHead',
                          'CRMTMarginLoss', 'ConvEncoder']),
                (HOOKS, ['CRMTPhaseSwitchHook']),
                (LOOPS, ['CRMTTrainLoop', 'RobustValLoop', 'RobustTestLoop']),
                (METRICS, ['RobustAccMetric']),
                (DATASETS, ['AudioVisualDataset']),
                (TRANSFORMS, ['LoadCRMTAudio'])]
    for registry, names in expected:
        for name in names:
            assert registry.get(name) is not None, name
