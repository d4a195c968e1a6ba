"""The minimal model contract of the robust evaluation.

Attacks and missing-modality evaluation need only a model that maps a dict
of modality tensors to fused logits; certification needs the late-fusion
structure of CRMT on top (``docs/design.md``, "Model contract"). Each
requirement is listed with what it is used for, so a refused model gets an
error that says what to add, and why.
"""
from typing import Dict, Optional

#: Needed by every robust evaluation (attacks, missing modality, noise).
ATTACK_CONTRACT: Dict[str, str] = {
    'modalities': 'the modality names, a tuple of str fixing their order',
    'data_preprocessor': 'the mmengine data preprocessor (one '
    'preprocessing per batch, shared by the clean pass and the attacks)',
    'batch_to_modalities': 'batch_to_modalities(data, training=False, '
    'preprocessed=True) -> ({modality: Tensor}, labels [B], data_samples)',
    'fused_logits': 'fused_logits(x, drop=()) -> [B, K] logits, the '
    'function attacked (drop: modalities whose contribution is removed, '
    'for MissingModality(mode=\'feature\'))',
}
#: Used when present: without it nothing is clamped to a valid range and
#: raw-unit budgets (``eps_unit='raw'``) are refused by the attacks.
OPTIONAL_CONTRACT: Dict[str, str] = {
    'input_spaces': 'input_spaces() -> {modality: InputSpace or None}',
}
#: Needed in addition by certification (``certify`` set).
CERTIFY_CONTRACT: Dict[str, str] = {
    'modality_logits': 'modality_logits(x) -> {modality: [B, K]} uni-modal '
    'logits z^(m)',
    'integration_weights': 'integration_weights() -> [M, K] tensor a',
    'bias': 'bias, the [K] fused bias b',
    'num_classes': 'num_classes, K (tau estimation)',
}
#: Needed in addition by ``certify.tau_source='model'``.
TAU_CONTRACT: Dict[str, str] = {
    'tau': "tau, the [M, K] Lipschitz estimates buffer (or use "
    "certify.tau_source='estimate')",
}


def missing_requirements(model, certify: Optional[dict]) -> Dict[str, str]:
    """``{attribute: what it is needed for}`` that ``model`` lacks.

    Args:
        model: the unwrapped model.
        certify (dict, optional): the checked ``certify`` config (None =
            attacks only).
    """
    needed = dict(ATTACK_CONTRACT)
    if certify is not None:
        needed.update(CERTIFY_CONTRACT)
        if certify['tau_source'] == 'model':
            needed.update(TAU_CONTRACT)
    return {k: v for k, v in needed.items() if not hasattr(model, k)}


def check_model(model, certify: Optional[dict], who: str) -> None:
    """Raise ``TypeError`` naming every missing requirement and its use.

    Args:
        model: the unwrapped model.
        certify (dict, optional): the checked ``certify`` config.
        who (str): the caller, for the message (e.g. ``'RobustTestLoop'``).
    """
    missing = missing_requirements(model, certify)
    if not missing:
        return
    lines = '; '.join(f'{k}: {v}' for k, v in missing.items())
    purpose = 'robust evaluation' if any(
        k in ATTACK_CONTRACT for k in missing) else 'certification'
    hint = (' An mmaction2 MMRecognizer3D qualifies as '
            "type='RobustMMRecognizer3D'." if 'fused_logits' in missing
            else '')
    raise TypeError(
        f'{who}: {type(model).__name__} does not meet the model contract '
        f'of the {purpose} (docs/design.md, "Model contract"); it lacks '
        f'{lines}.{hint}')
