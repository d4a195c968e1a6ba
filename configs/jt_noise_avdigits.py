# The JT baseline with the audio noise augmentation of
# crmt_noise_avdigits.py.
_base_ = ['./jt_avdigits.py']
model = dict(train_perturbation=dict(type='GaussianNoise', modality='audio',
                                     sigma=0.25))
