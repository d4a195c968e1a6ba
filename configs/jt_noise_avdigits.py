# The JT baseline with the audio noise augmentation (sigma 0.5) of
# crmt_noise_avdigits.py.
_base_ = ['./jt_avdigits.py']
model = dict(train_perturbation=dict(type='GaussianNoise', modality='audio',
                                     sigma=0.5))
