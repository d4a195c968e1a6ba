"""Clear errors for misspelled config keys of crmt_mm modules."""
import difflib
import functools
import inspect

__all__ = ['reject_unknown_keys']


def reject_unknown_keys(cls: type) -> type:
    """Class decorator: an unknown constructor keyword names the valid ones.

    mmengine builds modules, hooks and loops with ``cls(**cfg)``, so a
    misspelled config key surfaces as Python's "unexpected keyword
    argument", which names neither the accepted keys nor the one probably
    meant. The decorated ``__init__`` raises a ``TypeError`` (the type
    Python raises, so existing handlers keep working) naming the class, the
    unknown keys, the closest accepted key and every accepted key. Missing
    required arguments are left to Python, whose message is already clear.

    Note:
        The check runs before the original ``__init__``, so nothing is
        built (no backbone, no dataloader) for a config that cannot work.

    Args:
        cls (type): A class whose ``__init__`` takes no ``**kwargs``.

    Returns:
        type: ``cls`` itself, with ``__init__`` wrapped.

    Example:
        >>> @MODELS.register_module()
        ... @reject_unknown_keys
        ... class CRMTHead(FusionHead):
        ...     ...
    """
    init = cls.__init__
    params = inspect.signature(init).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        raise TypeError(f'{cls.__name__}.__init__ takes **kwargs, so every '
                        'key is accepted; reject_unknown_keys cannot apply.')
    allowed = [p.name for p in params if p.name != 'self' and p.kind in (
        p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    @functools.wraps(init)
    def checked_init(self, *args, **kwargs):
        unknown = [key for key in kwargs if key not in allowed]
        if unknown:
            close = difflib.get_close_matches(unknown[0], allowed, n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            # type(self): a subclass inheriting this __init__ names itself.
            raise TypeError(
                f'{type(self).__name__}: unknown config key(s) {unknown}'
                f'{hint}; allowed keys: {allowed}.')
        init(self, *args, **kwargs)

    cls.__init__ = checked_init
    return cls
