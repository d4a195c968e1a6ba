"""Accuracies under perturbations and certified accuracy from the
per-sample records of the robust evaluation (``docs/evaluation.md``)."""
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

from mmaction.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from ..smoothing_eval import smoothing_scalars, summarize_smoothing
from ..summary import check_names, scalars, summarize, worst_case_groups

#: Data-sample field holding the robust record of one sample.
RECORD_FIELD = 'robust_record'


@METRICS.register_module()
class RobustAccMetric(BaseMetric):
    """Robust, missing-modality, noise and certified accuracy.

    Works with :class:`~crmt_mm.evaluation.RobustValLoop` /
    :class:`~crmt_mm.evaluation.RobustTestLoop` (or any driver of
    :class:`~crmt_mm.evaluation.RobustEvaluator`), which fix the evaluated
    perturbations (:meth:`bind`), start each evaluation (:meth:`begin`) and
    attach one record per sample (``robust_record``: label, clean
    prediction, the prediction under every perturbation, None once it
    failed, and with certification r(x) and every r^(m)(x)).
    :meth:`process` appends exactly one CPU record per sample, so
    ``evaluate(size)`` drops the DDP padding and the result equals a
    single-process run. After ``evaluate`` the main process holds the
    gathered records in dataset order in :attr:`records`, for the report
    (:func:`crmt_mm.evaluation.report.build_report`); the metric itself
    builds no report.

    Metric names (with the default prefix ``robust``):

    * ``robust/clean``; ``robust/<perturbation name>``, e.g.
      ``robust/pgd_audio@0.5``, ``robust/missing_audio``,
      ``robust/noise_all@0.1``; a failed perturbation has no key.
    * ``robust/worst_<label>@<eps>``: per-sample worst case over members
      (correct only if correct under all), when ``worst_case`` is set.
    * ``robust/weakest@<eps>`` (with ``worst_case='auto'``): the weakest
      modality, correct only if correct under every uni-modal attack on
      every modality at that budget (per-clip worst case over modality and
      attack), for each budget attacked on >= 2 modalities; curve
      ``weakest`` (``docs/evaluation.md``, "Weakest modality").
    * ``robust/auc_<curve>``: area under accuracy vs budget over
      [0, max budget] divided by the max budget (the clean accuracy is the
      point at 0), for curves with >= 2 positive budgets, e.g.
      ``robust/auc_pgd_audio``.
    * ``robust/certified@<R>``, ``robust/certified_<m>@<R>``: fraction with
      r(x) > R (r^(m)(x) > R); r > 0 only for correctly classified samples.
    * ``robust/radius_median`` (``_<m>``): median radius over correctly
      classified samples (absent if none is correct).
    * ``robust/cert_violations``: (sample, attack) pairs certified at the
      attack budget but broken by it; > 0 proves tau underestimated.
    * With ``smoothing`` entries (sound certificates of the smoothed
      classifier, ``docs/certification.md``), per entry name:
      ``robust/smoothing_audio@0.25/certified@<R>``, ``.../abstain``
      (abstention rate) and ``.../violations`` (smoothed predictions at
      attacked points within the certified radius that differ from the
      certified class; any > 0 is a bug).

    Args:
        worst_case (str | dict, optional): None (off), ``'auto'`` (every
            FGM/PGD pair at the same label and budget, named
            ``worst_<label>@<eps>``, and the weakest-modality records
            ``weakest@<eps>``) or ``{name: [member names]}``.
            Costs no model call. Defaults to None.
        collect_device (str): ``'cpu'`` or ``'gpu'``. Defaults to ``'cpu'``.
        prefix (str, optional): Defaults to None (``'robust'``).
        collect_dir (str, optional): see ``BaseMetric``. Defaults to None.

    Example:
        >>> test_evaluator = [dict(type='AccMetric'),
        ...                   dict(type='RobustAccMetric',
        ...                        worst_case='auto')]
    """

    default_prefix = 'robust'

    def __init__(self, worst_case: Union[None, str, Dict[str, Sequence[str]]]
                 = None, collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix,
                         collect_dir=collect_dir)
        if not (worst_case is None or worst_case == 'auto' or
                isinstance(worst_case, dict)):
            raise ValueError("worst_case must be None, 'auto' or a dict "
                             f'{{name: [members]}}, got {worst_case!r}')
        if isinstance(worst_case, dict):
            for name, members in worst_case.items():
                if not isinstance(members, (list, tuple)) or \
                        len(members) < 2:
                    raise ValueError(
                        f'worst_case[{name!r}] must list >= 2 perturbation '
                        f'names, got {members!r}')
        self.worst_case = worst_case
        # Set by the driver: bind() once, begin() per evaluation.
        self.perturbations: Optional[List[dict]] = None
        self.modalities: Tuple[str, ...] = ()
        self.radii: Optional[List[float]] = None
        self.smoothing: List[dict] = []
        self.groups: List[dict] = []
        self.active = False
        self.certified = False
        #: Gathered records of the last evaluation (main process only).
        self.records: Optional[List[dict]] = None
        self._warned_unbound = False

    def bind(self, perturbations: List[dict], modalities: Sequence[str],
             radii: Optional[Sequence[float]],
             smoothing: Sequence[dict] = ()) -> None:
        """Fix the evaluated perturbations (their ``describe()`` dicts)
        and smoothing entries (``SmoothingRun.describe()``).

        Raises:
            ValueError: a name shadows a metric name, or ``worst_case``
                names an unknown member or clashes with a perturbation.
        """
        check_names(perturbations)
        self.perturbations = list(perturbations)
        self.modalities = tuple(modalities)
        self.radii = None if radii is None else [float(r) for r in radii]
        self.smoothing = list(smoothing)
        self.groups = worst_case_groups(self.worst_case, self.perturbations)

    def begin(self, active: bool, certified: bool = False) -> None:
        """Start one evaluation.

        Args:
            active (bool): the robust part runs this time (the same on
                every rank, so a skipped collection leaves no rank waiting).
            certified (bool): the records carry radii.
        """
        self.active = bool(active)
        self.certified = bool(certified) and self.radii is not None
        self.records = None
        self.results.clear()

    # ---- BaseMetric ------------------------------------------------------

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Append the robust record of every sample (plain CPU values)."""
        if not self.active:
            return
        for sample in data_samples:
            record = sample.get(RECORD_FIELD)
            if record is None:
                raise KeyError(
                    f'data sample without {RECORD_FIELD!r}: RobustAccMetric '
                    'needs RobustValLoop/RobustTestLoop')
            self.results.append(record)

    def evaluate(self, size: int) -> dict:
        """Like ``BaseMetric.evaluate``; ``{}`` without a robust part."""
        if not self.active:
            if self.perturbations is None and not self._warned_unbound:
                print_log(
                    'RobustAccMetric reports nothing: use it with '
                    "test_cfg/val_cfg type='RobustTestLoop'/'RobustValLoop'",
                    logger='current', level=logging.WARNING)
                self._warned_unbound = True
            self.results.clear()
            return {}
        return super().evaluate(size)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Scalars for the logger; keeps ``results`` as :attr:`records`."""
        self.records = list(results)
        summary = summarize(results, self.perturbations, self.groups,
                            self.modalities,
                            self.radii if self.certified else None)
        cert = summary['certification']
        if cert is not None and cert['violations']['total']:
            print_log(
                f'{cert["violations"]["total"]} (sample, attack) pairs were '
                'certified at the attack budget yet broken by the attack: '
                'tau is underestimated, the certificates are not valid '
                f'bounds ({cert["violations"]["by_attack"]})',
                logger='current', level=logging.WARNING)
        smoothed = summarize_smoothing(results, self.smoothing)
        for section in smoothed:
            if section['violations']['total']:
                print_log(
                    f'{section["name"]}: {section["violations"]["total"]} '
                    'smoothed predictions at attacked points inside the '
                    'certified radius differ from the certified class: a '
                    'bug in the certificate or its evaluation '
                    f'({section["violations"]["by_attack"]})',
                    logger='current', level=logging.ERROR)
        return dict(scalars(summary), **smoothing_scalars(smoothed))
