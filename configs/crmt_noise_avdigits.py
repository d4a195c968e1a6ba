# CRMT with Gaussian noise augmentation on AV-Digits: step 1 adds fresh
# N(0, 0.5^2) noise (normalised input units) to the audio of every training
# batch, so that randomized-smoothing certificates on audio (Cohen et al.,
# ICML 2019) are not trivial. sigma = 0.5 because a radius of 1.0 needs
# sigma * Phi^-1(alpha^(1/n)) > 1: with n = 1,000 and alpha = 0.001 no
# radius exceeds 2.46 sigma (docs/certification.md). Everything else as
# crmt_avdigits.py.
_base_ = ['./crmt_avdigits.py']
model = dict(train_perturbation=dict(type='GaussianNoise', modality='audio',
                                     sigma=0.5))
