# VGGSound, 309 classes (docs/method.md §11): the Kinetics-Sounds pipeline and
# file formats (the reference has no VGGSound loader; assumption). Prepare
# with `python tools/data/prepare_ks_vggsound.py VIDEOS data/vggsound
# --name vggsound --csv vggsound.csv` (docs/datasets.md).
_base_ = ['./kinetics_sounds.py']
data_root = 'data/vggsound'
num_classes = 309


# ~200k clips: every rank checks 1/W of the files at start-up and a passed
# check is recorded in a manifest (keyed by the list, the roots and their
# mtimes), so a restart does not check again (docs/reliability.md).
manifest_dir = '~/.cache/crmt_mm/manifests'


def _split(name):
    return dict(
        ann_file=f'{data_root}/vggsound_{name}.txt',
        data_prefix=dict(img=f'{data_root}/rawframes',
                         audio=f'{data_root}/audio'),
        num_classes=num_classes,
        manifest_dir=manifest_dir)


# Per GPU; 8 GPUs x 8 = 64 clips per step, the reference's KS batch.
train_dataloader = dict(batch_size=8, dataset=_split('train'))
val_dataloader = dict(batch_size=8, dataset=_split('test'))
test_dataloader = val_dataloader
