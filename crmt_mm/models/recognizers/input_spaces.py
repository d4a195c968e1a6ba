"""Input spaces of a model's modalities from its data preprocessor."""
from typing import Dict, Mapping, Optional

from crmt_mm.attacks import InputSpace

#: Valid raw range of a normalised (image-like) input in mmaction2 units.
PIXEL_RANGE = (0.0, 255.0)


def preprocessor_input_spaces(data_preprocessor,
                              input_keys: Mapping[str, str],
                              input_ranges: Mapping[str, object]
                              ) -> Dict[str, Optional[InputSpace]]:
    """``{modality: InputSpace or None}`` from a multi-modal preprocessor.

    A modality whose ``ActionDataPreprocessor`` normalises gets its mean and
    std and the valid raw range ``input_ranges[m]`` (default 0..255, pixel
    units); one that is not normalised gets ``input_ranges[m]`` if given,
    else None (never clamped, e.g. log-mel audio).

    Args:
        data_preprocessor: normally ``MultiModalDataPreprocessor`` (its
            ``preprocessors`` keyed by input key); anything else gives no
            statistics.
        input_keys (Mapping[str, str]): modality name -> input key.
        input_ranges (Mapping[str, object]): modality -> ``(lo, hi)`` or
            None.
    """
    spaces = {}
    preprocessors = getattr(data_preprocessor, 'preprocessors', {})
    for name, key in input_keys.items():
        pre = preprocessors[key] if key in preprocessors else None
        normalised = pre is not None and getattr(pre, '_enable_normalize',
                                                 False)
        bounds = input_ranges.get(name, PIXEL_RANGE if normalised else None)
        if bounds is None and not normalised:
            spaces[name] = None
            continue
        spaces[name] = InputSpace(
            mean=pre.mean if normalised else None,
            std=pre.std if normalised else None,
            lo=None if bounds is None else bounds[0],
            hi=None if bounds is None else bounds[1])
    return spaces
