# VGGSound, 309 classes (crmt.md §11): the Kinetics-Sounds pipeline and
# file formats (the reference has no VGGSound loader; assumption). Prepare
# with `python tools/data/prepare_ks_vggsound.py VIDEOS data/vggsound
# --name vggsound --csv vggsound.csv` (docs/datasets.md).
_base_ = ['./kinetics_sounds.py']
data_root = 'data/vggsound'
num_classes = 309


def _split(name):
    return dict(
        ann_file=f'{data_root}/vggsound_{name}.txt',
        data_prefix=dict(img=f'{data_root}/rawframes',
                         audio=f'{data_root}/audio'),
        num_classes=num_classes)


# Per GPU; 8 GPUs x 8 = 64 clips per step, the reference's KS batch.
train_dataloader = dict(batch_size=8, dataset=_split('train'))
val_dataloader = dict(batch_size=8, dataset=_split('test'))
test_dataloader = val_dataloader
