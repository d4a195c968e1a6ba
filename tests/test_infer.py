"""tools/infer.py on the tiny AV-Digits fixture: a clip given as frames +
audio and the same clip given by its annotation line print the same fused
and per-modality top-5 with class names, and --radius the certified radii
the model computes."""
import os.path as osp
import sys

import pytest
import torch
from mmaction.registry import DATASETS, MODELS
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import save_checkpoint

from crmt_mm.certification.radius import modality_radii
from helpers import ROOT, tiny_config

sys.path.insert(0, osp.join(ROOT, 'tools'))
import infer  # noqa: E402

CLASSES = tuple(f'digit {i}' for i in range(10))


@pytest.fixture(scope='module')
def model_files(avdigits_tiny, tmp_path_factory):
    """A config (with class names) and a checkpoint of a freshly built
    model whose tau is set, as if after CRMT's step 2."""
    work = str(tmp_path_factory.mktemp('infer'))
    cfg = tiny_config('crmt_avdigits.py', avdigits_tiny, work)
    cfg.test_dataloader.dataset.metainfo = dict(classes=CLASSES)
    config = osp.join(work, 'cfg.py')
    cfg.dump(config)
    init_default_scope('mmaction')
    torch.manual_seed(0)
    # From the dumped file: Config.dump sorts the keys, so the modality
    # order (that of `encoders`) is the dumped one.
    model = MODELS.build(Config.fromfile(config).model)
    model.tau.copy_(torch.rand_like(model.tau) + 0.5)
    checkpoint = osp.join(work, 'model.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), checkpoint)
    return config, checkpoint, model.eval()


def test_raw_and_dataset_inputs_agree(model_files, avdigits_tiny, capsys):
    config, checkpoint, model = model_files
    with open(osp.join(avdigits_tiny, 'avdigits_test.txt')) as f:
        lines = [line.split() for line in f if line.strip()]
    index = 0
    clip = lines[index][0]
    by_index = infer.main([config, checkpoint, '--index', str(index),
                           '--radius'])
    printed = capsys.readouterr().out
    by_files = infer.main([
        config, checkpoint, '--radius',
        '--frames', osp.join(avdigits_tiny, 'rawframes', 'test', clip),
        '--audio', osp.join(avdigits_tiny, 'audio', 'test', clip + '.npy')])
    assert by_index['top'] == by_files['top']
    assert by_index['radius'] == by_files['radius']
    assert set(by_index['top']) == {'fused', 'visual', 'audio'}
    assert all(len(top) == 5 for top in by_index['top'].values())
    assert by_index['label'] == CLASSES[int(lines[index][2])]
    for name in ('fused', 'visual', 'audio'):
        assert f'{name} top-5: digit ' in printed
    assert 'certified radius of the fused prediction: joint' in printed

    # The numbers are the model's own, on the test pipeline's sample.
    dataset = DATASETS.build(Config.fromfile(config).test_dataloader.dataset)
    sample = dataset[index]
    with torch.no_grad():
        data = model.data_preprocessor(dict(
            inputs={k: [v] for k, v in sample['inputs'].items()},
            data_samples=[sample['data_samples']]), False)
        x = model.split_inputs(data['inputs'])
        logits = model.modality_logits(x)
        fused = model.fuse(logits).softmax(-1)[0]
        z = torch.stack([logits[m] for m in model.modalities])
        per = modality_radii(z, model.integration_weights(), model.bias,
                             model.tau, fused.argmax().view(1))
    top = by_index['top']['fused'][0]
    assert top['index'] == int(fused.argmax())
    assert top['score'] == pytest.approx(float(fused.max()), rel=1e-5)
    for i, name in enumerate(model.modalities):
        assert by_index['radius'][name] == pytest.approx(float(per[i, 0]),
                                                         rel=1e-5)


def test_argument_and_checkpoint_errors(model_files, tmp_path):
    config, checkpoint, model = model_files
    for argv in ([config, checkpoint],
                 [config, checkpoint, '--frames', 'x'],
                 [config, checkpoint, '--index', '0', '--frames', 'x',
                  '--audio', 'y'],
                 [config, checkpoint, '--ann-file', 'a.txt']):
        with pytest.raises(SystemExit):
            infer.parse_args(argv)
    untrained = str(tmp_path / 'untrained.pth')
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['tau'].zero_()
    save_checkpoint(dict(state_dict=state), untrained)
    with pytest.raises(SystemExit, match='tau is all zeros'):
        infer.main([config, untrained, '--index', '0', '--radius'])
    with pytest.raises(SystemExit, match='outside the'):
        infer.main([config, checkpoint, '--index', '999'])
