"""Perturbation.describe(): every class describes itself with the keys the
metric and the report rely on."""
import pytest

from crmt_mm.attacks import (DESCRIPTION_KEYS, MissingModality, Perturbation,
                             build_perturbations, description)


@pytest.mark.parametrize('cfg, expected', [
    (dict(type='UniModalPGD', modality='audio', eps=0.5),
     dict(kind='pgd', label='audio', curve='pgd_audio', budget=0.5,
          unit='normalized', group='audio', modalities=['audio'])),
    (dict(type='UniModalFGM', modality='visual', eps=1.0, eps_unit='raw'),
     dict(kind='fgm', curve='fgm_visual_raw', unit='raw', group='visual')),
    (dict(type='MultiModalPGD', eps=0.2),
     dict(kind='pgd', label='joint', curve='pgd_joint', group='joint',
          modalities=None)),
    (dict(type='PerModalityPGD', eps=dict(visual=0.1, audio=0.5)),
     dict(kind='pgd', label=None, curve=None, budget=None)),
    (dict(type='MissingModality', modality='audio', mode='feature'),
     dict(kind='missing', curve=None, unit=None)),
    (dict(type='GaussianNoise', sigma=0.1),
     dict(kind='noise', label='all', curve='noise_all', budget=0.1,
          group='joint')),
    (dict(type='WorstCase', modality='audio', eps=0.5),
     dict(kind='worst', label='audio', curve='worst_audio', budget=0.5)),
])
def test_every_class_describes_itself(cfg, expected):
    p = build_perturbations(cfg)[0]
    d = p.describe()
    assert set(DESCRIPTION_KEYS) <= set(d)
    assert (d['name'], d['type']) == (p.name, cfg['type'])
    assert ('group' in d) == (d['curve'] is not None)
    for key, value in expected.items():
        assert d[key] == value, key


def test_l2_settings_and_worst_case_members():
    d = build_perturbations(dict(type='UniModalPGD', modality='audio',
                                 eps=0.6, steps=3, random_start=True,
                                 seed=4))[0].describe()
    s = d['settings']
    assert (s['eps'], s['steps'], s['seed'], s['random_start']) == \
        (0.6, 3, 4, True)
    assert s['step_size'] == pytest.approx(0.2)
    assert 'normalised input space' in s['space']
    w = build_perturbations(dict(type='WorstCase', perturbations=[
        dict(type='UniModalPGD', modality='audio', eps=0.5),
        dict(type='MissingModality', modality='audio')]))[0].describe()
    assert w['settings']['members'] == ['pgd_audio@0.5', 'missing_audio']
    assert w['curve'] is None  # not all members are L2 attacks


class Custom(Perturbation):
    def default_name(self):
        return 'custom'


def test_default_description_and_helper():
    d = Custom().describe()
    assert (d['kind'], d['curve']) == ('other', None)
    assert d['settings'] == dict(repr="Custom(name='custom')")
    assert description(MissingModality('audio'), kind='x')['kind'] == 'x'
    with pytest.raises(ValueError, match='unknown description keys'):
        description(Custom(), colour='red')
