"""Shared helpers for the integration tests: tiny data and configs."""
import os
import os.path as osp

from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def config_path(name: str) -> str:
    return osp.join(ROOT, 'configs', name)


def point_to_avdigits(cfg: Config, data_root: str, batch_size: int = 8,
                      num_workers: int = 0) -> Config:
    """Redirect every AV-Digits dataloader of ``cfg`` to ``data_root``."""
    for key, split in (('train_dataloader', 'train'),
                       ('val_dataloader', 'test'),
                       ('test_dataloader', 'test')):
        loader = cfg.get(key)
        if loader is None:
            continue
        dataset = loader['dataset']
        dataset['ann_file'] = osp.join(data_root, f'avdigits_{split}.txt')
        dataset['data_prefix'] = dict(
            img=osp.join(data_root, 'rawframes', split),
            audio=osp.join(data_root, 'audio', split))
        loader['batch_size'] = batch_size
        loader['num_workers'] = num_workers
        loader['persistent_workers'] = False
    return cfg


def tiny_config(name: str, data_root: str, work_dir: str, **options
                ) -> Config:
    """A demo config shrunk for tests: tiny data, few epochs, quiet logs."""
    cfg = Config.fromfile(config_path(name))
    point_to_avdigits(cfg, data_root)
    cfg.work_dir = work_dir
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.max_keep_ckpts = -1
    cfg.default_hooks.checkpoint.interval = 1
    cfg.train_cfg.val_interval = 100
    cfg.log_level = 'WARNING'
    cheap_evaluation(cfg)
    cfg.merge_from_dict(options)
    os.makedirs(work_dir, exist_ok=True)
    return cfg


#: Test-sized settings of the expensive evaluation entries: the configs'
#: strong ensembles and paper-grade smoothing exercise the same code with
#: these, in seconds instead of hours on a CPU.
CHEAP_ENSEMBLE = dict(steps=2, n_targets=1, queries=10)
CHEAP_SMOOTHING = dict(n0=8, n=32, batch_size=16)


def cheap_evaluation(cfg: Config) -> Config:
    """Shrink the strong ensembles and smoothing entries of ``test_cfg``
    and ``val_cfg`` in place (the 'reference' ensemble has no such knobs)."""
    for key in ('test_cfg', 'val_cfg'):
        loop = cfg.get(key)
        if not loop:
            continue
        for p in loop.get('perturbations', []):
            if p.get('type') == 'MultiModalAutoAttack' and \
                    p.get('version') != 'reference':
                p.update(CHEAP_ENSEMBLE)
        for entry in loop.get('smoothing', []):
            entry.update(CHEAP_SMOOTHING)
    return cfg


def free_port() -> int:
    """A free TCP port on localhost, for a torch.distributed rendezvous."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def load_tool(name: str):
    """Import ``tools/<name>.py`` (tools/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        f'crmt_tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
