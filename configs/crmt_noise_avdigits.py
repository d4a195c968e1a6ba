# CRMT with Gaussian noise augmentation on AV-Digits: step 1 adds fresh
# N(0, 0.25^2) noise (normalised input units) to the audio of every training
# batch, so that randomized-smoothing certificates on audio (Cohen et al.,
# ICML 2019) are not trivial. Everything else as crmt_avdigits.py.
_base_ = ['./crmt_avdigits.py']
model = dict(train_perturbation=dict(type='GaussianNoise', modality='audio',
                                     sigma=0.25))
