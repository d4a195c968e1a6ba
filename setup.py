from setuptools import find_packages, setup

setup(
    name='crmt_mm',
    version='0.1.0',
    description='Certifiably robust multi-modal training (CRMT, ICLR 2024) '
    'as an mmaction2/mmengine plugin',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.9',
    packages=find_packages(include=['crmt_mm', 'crmt_mm.*']),
    package_data={'crmt_mm': ['data_prep/assets/*']},
    install_requires=[
        'torch==2.13.0',
        'mmengine==0.10.7',
        'mmcv-lite==2.1.0',
        'mmaction2==1.2.0',
        'importlib_metadata',
        'setuptools<82',
        'numpy',
        'scikit-learn',
        'scipy',
        'matplotlib',
    ],
    extras_require={
        # av (PyAV) bundles ffmpeg for frame/audio extraction;
        # kaldi-native-fbank computes the Kaldi log-mel filterbank.
        'data': ['av>=18.1', 'kaldi-native-fbank>=1.23'],
        'tests': ['pytest', 'hypothesis', 'av>=18.1',
                  'kaldi-native-fbank>=1.23'],
    },
    license='Apache-2.0',
)
