"""The robust evaluation of one model, batch by batch, for any driver.

:class:`RobustEvaluator` owns everything between a raw batch and the
per-sample robust records: the clean pass, every perturbation, the
certified radii, failure isolation, timings and progress lines. It knows
no mmengine loop, so the robust loops (``RobustValLoop``/``RobustTestLoop``)
and an evaluation hook drive the same code:

* a loop calls :meth:`RobustEvaluator.begin`, then
  :meth:`RobustEvaluator.process` per batch (its outputs go to every metric
  of the evaluator), then :meth:`RobustEvaluator.protocol` for the report;
* a hook calls :meth:`RobustEvaluator.run` on a dataloader, which does the
  same and gathers the records across ranks through
  :class:`~crmt_mm.evaluation.RobustAccMetric`.

The model needs only the attack contract of :mod:`.contract`;
certification needs more (checked when the evaluator is built).
"""
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.dist import is_main_process
from mmengine.logging import MMLogger
from mmengine.runner import Runner
from mmengine.runner.amp import autocast
from torch import Tensor

from crmt_mm.attacks import (APGD, BallAttack, MultiModalAutoAttack,
                             Perturbation, WorstCase, build_perturbations,
                             check_modalities, nested_sweep)
from crmt_mm.attacks.base import format_value
from crmt_mm.certification import (certified_radius, estimate_tau_on_loader,
                                   modality_radii)
from crmt_mm.certification.smoothing import sample_indices, smoothing_forward
from .certify_config import CERTIFICATE_LABEL, check_certify
from .contract import check_model
from .metrics.robust_acc_metric import RECORD_FIELD, RobustAccMetric
from .model_state import capture_features, eval_mode
from .progress import Progress
from .subset import check_subset, subset_mask
from .trust import check_trust, gradient_norms
from .smoothing_eval import SMOOTHING_FIELD, SmoothingRun


class RobustEvaluator:
    """Perturbations and certificates of one model, batch by batch.

    Per batch (:meth:`process`): preprocess once; the clean ``predict``
    forward (its data samples go to every metric, its fused score gives
    the clean prediction of the record, its encoder features the certified
    radii, so only the linear head is re-run); then every perturbation's
    ``predict(model.fused_logits, x, y, spaces)``. Perturbations enable
    gradients themselves (w.r.t. inputs only) and are called under
    ``no_grad``, so the final forward of each attack builds no graph.
    Everything runs on the given (unwrapped) model in eval mode, every
    module's mode restored afterwards; parameters and buffers are never
    written.

    One record per sample (``robust_record`` on its data sample, see
    :mod:`crmt_mm.evaluation.summary`) is what
    :class:`~crmt_mm.evaluation.RobustAccMetric` gathers, so a DDP run
    equals a single-process run.

    Args:
        model (nn.Module): the unwrapped model (the minimal contract of
            :mod:`crmt_mm.evaluation.contract`).
        perturbations (Sequence[dict | Perturbation]): configs for
            :func:`crmt_mm.attacks.build_perturbations`. Defaults to ().
        certify (dict, optional): see
            :func:`crmt_mm.evaluation.certify_config.check_certify`.
            Defaults to None (off).
        smoothing (Sequence[dict]): randomized-smoothing entries, each a
            ``GaussianSmoothingCertifier`` config plus ``subset``,
            ``radii`` and ``check_attacks``
            (:class:`~crmt_mm.evaluation.smoothing_eval.SmoothingRun`).
            Defaults to () (off).
        stage (str): ``'val'`` or ``'test'``, for log lines and the report.
            Defaults to ``'test'``.
        fp16 (bool): autocast the clean pass. Defaults to False.
        log_interval (int, optional): batches between progress lines.
            Defaults to None (about ten per pass, at least every 30 s).
        logger (MMLogger, optional): Defaults to None (the current one).
        who (str): the driver's name, for error messages. Defaults to
            ``'RobustEvaluator'``.
        subset (dict, optional): ``dict(size=N, seed=S, scope=...)``: run
            the expensive perturbations and the large-budget trust attacks
            only on a seeded subsample of about N clips; ``scope='strong'``
            (default): every ``MultiModalAutoAttack`` whose version is not
            ``'reference'``; ``'attacks'``: every adversarial attack
            (:mod:`crmt_mm.evaluation.subset`). Every other perturbation
            sees every clip. Defaults to None (every clip).
        trust (bool | dict | str): the trust figures of
            :mod:`crmt_mm.evaluation.trust` (True, or a dict overriding
            :data:`~crmt_mm.evaluation.trust.TRUST_DEFAULTS`); ``'auto'``:
            on when an ensemble is evaluated. Defaults to ``'auto'``.

    Example:
        >>> evaluator = RobustEvaluator(
        ...     model, [dict(type='UniModalPGD', modality='audio', eps=0.5)])
        >>> result = evaluator.run(dataloader)  # any rank
        >>> result['metrics']['robust/pgd_audio@0.5']
    """

    def __init__(self, model, perturbations: Sequence = (),
                 certify: Optional[dict] = None, stage: str = 'test',
                 fp16: bool = False, log_interval: Optional[int] = None,
                 logger=None, who: str = 'RobustEvaluator',
                 subset: Optional[dict] = None, trust='auto',
                 smoothing: Sequence[dict] = ()) -> None:
        if log_interval is not None and (
                isinstance(log_interval, bool) or
                not isinstance(log_interval, int) or log_interval < 1):
            raise ValueError('log_interval must be None or an int >= 1, got '
                             f'{log_interval!r}')
        self.model = model
        self.stage, self.fp16, self.who = stage, fp16, who
        self.log_interval = log_interval
        self.logger = logger or MMLogger.get_current_instance()
        self.perturbations: List[Perturbation] = build_perturbations(
            list(perturbations), f'{who}.perturbations')
        #: ``describe()`` of every perturbation, in order.
        self.descriptions = [p.describe() for p in self.perturbations]
        #: The checked ``certify`` config (None = off).
        self.certify = check_certify(certify, self.descriptions)
        check_model(model, self.certify, who)
        check_modalities(self.perturbations, model.modalities)
        if not isinstance(smoothing, (list, tuple)):
            raise ValueError(f'{who}: smoothing must be a list of certifier '
                             f'configs, got {smoothing!r}')
        #: One :class:`SmoothingRun` per ``smoothing`` entry.
        self.smoothing = [SmoothingRun(entry, self.descriptions,
                                       model.modalities,
                                       f'{who}.smoothing[{i}]')
                          for i, entry in enumerate(smoothing)]
        names = [run.name for run in self.smoothing]
        if len(set(names)) != len(names):
            raise ValueError(f'{who}: smoothing entries {names} repeat a '
                             'name; give each a different modality or sigma')
        if not self.perturbations and self.certify is None and \
                not self.smoothing:
            raise ValueError(
                f'{who} has nothing to evaluate: give `perturbations`, '
                '`certify` and/or `smoothing`')
        self.subset = check_subset(subset)
        ensembles = [p for p in self.perturbations
                     if isinstance(p, MultiModalAutoAttack)]
        if trust == 'auto':
            trust = bool(ensembles)
        #: The checked trust settings (None = off).
        self.trust = check_trust(trust)
        self._plan = self._sweep_plan()
        self.large = self._large_budget_attacks() if self.trust else {}
        self._tau_skip_logged = False
        self._tau: Optional[Tensor] = None
        self._certification = dict(status='off')
        self._run_info: dict = {}

    def _sweep_plan(self) -> List[List[Perturbation]]:
        """Perturbations in evaluation units: each group of ensembles
        that differ only in budget (one ``eps`` list) is one nested sweep;
        every other perturbation is a unit of its own."""
        plan, sweeps = [], {}
        for p in self.perturbations:
            if isinstance(p, MultiModalAutoAttack):
                key = p.sweep_key()
                if key not in sweeps:
                    sweeps[key] = []
                    plan.append(sweeps[key])
                sweeps[key].append(p)
            else:
                plan.append([p])
        return plan

    def _large_budget_attacks(self) -> Dict[str, APGD]:
        """One APGD-CE per sweep at ``large_factor`` x its largest budget
        (the trust check that accuracy reaches about 0)."""
        factor, steps = self.trust['large_factor'], self.trust['large_steps']
        out = {}
        for unit in self._plan:
            if not isinstance(unit[0], MultiModalAutoAttack):
                continue
            top = max(unit, key=lambda e: _largest(e.eps))
            args = top._args
            eps = {m: v * factor for m, v in top.eps.items()} \
                if isinstance(top.eps, dict) else top.eps * factor
            attack = APGD(eps=eps, loss='ce', steps=steps, restarts=1,
                          seed=args['seed'], norm=args['norm'],
                          modality=args['modality'],
                          modalities=args['modalities'],
                          clamp=args['clamp'], eps_unit=args['eps_unit'])
            out.setdefault(attack.name, attack)
        return out

    def _expensive(self, p: Perturbation) -> bool:
        """Run on the subsample only (see ``subset``)."""
        if self.subset is None:
            return False
        if self.subset['scope'] == 'attacks':
            return _is_attack(p)
        return isinstance(p, MultiModalAutoAttack) and \
            p.version != 'reference'

    # ---- set-up ------------------------------------------------------------

    @property
    def needs_tau_data(self) -> bool:
        """True if :meth:`begin` needs a ``tau_loader``."""
        return self.certify is not None and \
            self.certify['tau_source'] == 'estimate'

    @property
    def certified(self) -> bool:
        """True if the records of this evaluation carry radii."""
        return self._tau is not None

    def bind(self, metric: RobustAccMetric) -> None:
        """Fix ``metric`` to this evaluator's perturbations and radii."""
        metric.bind(self.descriptions, self.model.modalities,
                    self.certify['radii'] if self.certify else None,
                    smoothing=[run.describe() for run in self.smoothing])

    def begin(self, num_batches: int, tau_loader=None,
              tau_data: str = 'certify.tau_data',
              run_info: Optional[dict] = None,
              num_samples: Optional[int] = None) -> dict:
        """Start one evaluation: input spaces, tau, counters, a log line.

        Args:
            num_batches (int): batches this rank will process (progress).
            tau_loader (Iterable, optional): raw batches for tau with
                ``certify.tau_source='estimate'``. Defaults to None.
            tau_data (str): what ``tau_loader`` is, for the report.
                Defaults to ``'certify.tau_data'``.
            run_info (dict, optional): run metadata for the report
                (checkpoint, config, work_dir, world_size, seed).
                Defaults to None.
            num_samples (int, optional): clips in the whole evaluated
                dataset (all ranks), for ``subset`` and the smoothing entries'
                ``subset``; None = no subsample.
                Defaults to None.

        Returns:
            dict: the certification section of the report (``status``
            ``'on'``, ``'off'`` or ``'skipped'``, tau provenance).
        """
        model = self.model
        self._spaces = model.input_spaces() \
            if hasattr(model, 'input_spaces') else \
            {m: None for m in model.modalities}
        self._tau, self._certification = self._prepare_tau(tau_loader,
                                                            tau_data)
        self._run_info = dict(run_info or {})
        self._num_samples = num_samples
        if self.subset is not None and not num_samples:
            self.logger.warning(
                f'{self.who}: subset={self.subset} needs the dataset size; '
                'not given, so every clip is attacked')
        self._correct = {name: 0 for name in
                         ['clean'] + [p.name for p in self.perturbations]}
        self._seconds = {name: 0.0 for name in self._correct}
        self._seconds['certify'] = 0.0
        self._seconds['trust'] = 0.0
        for run in self.smoothing:
            run.begin(num_samples)
            self._seconds[run.name] = 0.0
        self._batches = 0
        self._evaluated: Dict[str, int] = {}
        self._num_batches = num_batches
        self._failed: Dict[str, str] = {}
        self._progress = Progress(num_batches, self.log_interval)
        names = ', '.join(p.name for p in self.perturbations) or 'none'
        self.logger.info(
            f'robust {self.stage}: {num_batches} batches x '
            f'{len(self.perturbations)} perturbations ({names}); '
            f'certification: {self._certification["status"]}')
        return self._certification

    def _prepare_tau(self, loader, data: str):
        """The tau used for certification and its provenance."""
        if self.certify is None:
            return None, dict(status='off')
        model = self.model
        if self.certify['tau_source'] == 'model':
            tau = model.tau.detach().clone()
            if not bool((tau > 0).any()):
                if not self._tau_skip_logged:
                    self.logger.warning(
                        f'certification skipped: {type(model).__name__} has '
                        "no Lipschitz estimates (its 'tau' buffer is all "
                        'zeros, e.g. a JT model or a phase-1 checkpoint); '
                        "set certify.tau_source='estimate' to estimate tau "
                        'at evaluation time')
                    self._tau_skip_logged = True
                return None, dict(
                    status='skipped', reason="the model's tau buffer is all "
                    'zeros (never estimated)')
            provenance = dict(
                source='model', note="the model's tau buffer, normally "
                'written by CRMTPhaseSwitchHook at the switch to phase 2 '
                '(training data, eval mode, input gradients, max over '
                'ranks)')
        else:
            if loader is None:
                raise ValueError(
                    f"{self.who}: certify.tau_source='estimate' needs data "
                    'for tau (a tau_loader)')
            tau, provenance = self._estimate_tau(loader, data)
        return tau, dict(status='on', label=CERTIFICATE_LABEL,
                         radii=self.certify['radii'], competitor='min',
                         weights='|a| (valid for any sign of a)',
                         tau=dict(provenance, values=tau.tolist(),
                                  modalities=list(self.model.modalities)))

    def _estimate_tau(self, loader, data: str):
        limit = self.certify['tau_max_batches']
        start = time.perf_counter()
        self.logger.info(
            f'certification: estimating tau on {data} (max_batches={limit}, '
            "certify.tau_source='estimate')")
        with eval_mode(self.model):
            result = estimate_tau_on_loader(self.model, loader,
                                            max_batches=limit)
        seconds = time.perf_counter() - start
        self.logger.info(
            f'certification: tau ESTIMATED AT EVALUATION TIME on '
            f'{result["num_samples"]} samples in {seconds:.1f}s')
        return result['tau'], dict(
            source='estimated at evaluation time', data=data,
            num_samples=result['num_samples'], max_batches=limit,
            mode='eval (BatchNorm running statistics), input gradients, '
            'max over samples and ranks', seconds=seconds)

    # ---- one batch ---------------------------------------------------------

    @torch.no_grad()
    def process(self, data_batch) -> list:
        """Clean pass, perturbations and radii of one raw batch.

        Returns:
            list: the clean ``predict`` data samples, each with its
            ``robust_record`` attached.
        """
        with eval_mode(self.model):
            outputs = self._step(self.model, data_batch)
        self._batches += 1
        if self._progress.due(self._batches):
            self._log_progress()
        return outputs

    def _step(self, model, data_batch) -> list:
        start = time.perf_counter()
        # One preprocessing for the clean pass and every perturbation; the
        # clean pass is what ``test_step`` would run (preprocess + predict).
        data = model.data_preprocessor(data_batch, False)
        with autocast(enabled=self.fp16), capture_features(
                model, enabled=self._tau is not None) as feats:
            outputs = model(**data, mode='predict')
        x, y, _ = model.batch_to_modalities(data, preprocessed=True)
        preds = {'clean': self._clean_prediction(model, outputs, x)}
        self._seconds['clean'] += time.perf_counter() - start
        rows = subset_mask(x, self.subset, self._num_samples)
        extra: Dict[str, list] = {}
        for unit in self._plan:
            if isinstance(unit[0], MultiModalAutoAttack):
                self._sweep(unit, model, x, y, rows, preds, extra)
            else:
                preds[unit[0].name] = self._predict(unit[0], model, x, y,
                                                    rows)
        radii = {} if self._tau is None else self._radii(model, x, y, feats)
        if self.trust is not None:
            extra['trust'] = self._trust(model, x, y, rows)
        if self.subset is not None:
            extra['subset'] = rows.tolist()
        self._attach_records(outputs, y.tolist(), {
            k: v if v is None or isinstance(v, list) else v.tolist()
            for k, v in preds.items()}, radii, extra)
        if self.smoothing:
            self._smooth(model, x, y, outputs)
        return outputs

    def _smooth(self, model, x, y, outputs) -> None:
        """Smoothing certificates of the batch's subset samples, added to
        their records (``record['smoothing'][name]``)."""
        indices = sample_indices(outputs)
        forward = smoothing_forward(model)
        for run in self.smoothing:
            start = time.perf_counter()
            results = run.process(forward, x, y, indices,
                                  self.perturbations, self._spaces)
            self._seconds[run.name] += time.perf_counter() - start
            for sample, result in zip(outputs, results):
                if result is not None:
                    record = sample.get(RECORD_FIELD)
                    record.setdefault(SMOOTHING_FIELD, {})[run.name] = result

    def _sweep(self, unit: List[MultiModalAutoAttack], model, x, y,
               rows: Tensor, preds: dict, extra: Dict[str, list]) -> None:
        """One nested sweep over the ensembles of ``unit`` on ``rows``.

        Fills ``preds`` (None outside ``rows``, or for every budget once
        the sweep has failed) and ``extra['ensemble']`` (per clip, per
        ensemble: the member that broke it first, and whether only the
        gradient-free member did).
        """
        names = [e.name for e in unit]
        batch = y.shape[0]
        info = extra.setdefault('ensemble', [dict() for _ in range(batch)])
        if not self._expensive(unit[0]):
            rows = torch.ones(batch, dtype=torch.bool)
        failed = next((self._failed[n] for n in names if n in self._failed),
                      None)
        if failed is not None or not bool(rows.any()):
            for n in names:
                preds[n] = None if failed is not None else [None] * batch
            return
        start = time.perf_counter()
        positions, sub, labels = _select(x, y, rows)
        try:
            result = nested_sweep(unit, model.fused_logits, sub, labels,
                                  self._spaces)
        except Exception as err:  # noqa: BLE001 (reported, not swallowed)
            for n in names:
                self._failed[n] = f'{type(err).__name__}: {err}'
                preds[n] = None
            self.logger.error(
                f'robust {self.stage}: ensemble sweep {names} failed and is '
                'skipped from here on (reported as failed)', exc_info=True)
            return
        finally:
            share = (time.perf_counter() - start) / len(names)
            for n in names:
                self._seconds[n] += share
        by_eps = {_budget_key(e.eps): e.name for e in unit}
        for res, eps in zip(result.results, result.budgets):
            name = by_eps[_budget_key(eps)]
            free = res.gradient_free_only.tolist()
            for j, i in enumerate(positions):
                info[i][name] = dict(broken_by=res.broken_by[j],
                                     gradient_free_only=bool(free[j]))
            preds[name] = _scatter(res.logits.argmax(1).tolist(), positions,
                                   batch)

    def _trust(self, model, x, y, rows: Tensor) -> list:
        """Per clip: clean-gradient norms, the difference between two
        clean passes and the predictions under the large-budget attacks
        (on ``rows`` only when there is a subsample)."""
        start = time.perf_counter()
        batch = y.shape[0]
        first = model.fused_logits(x).float()
        second = model.fused_logits(x).float()
        diff = (first - second).abs().flatten(1).amax(1).tolist()
        grads = gradient_norms(model.fused_logits, x, y)
        large: Dict[str, list] = {}
        positions, sub, labels = _select(x, y, rows)
        for name, attack in self.large.items():
            pred = attack.predict(model.fused_logits, sub, labels,
                                  self._spaces).argmax(1).tolist() \
                if positions else []
            large[name] = _scatter(pred, positions, batch)
        self._seconds['trust'] += time.perf_counter() - start
        return [dict(grad={loss: {m: v[i] for m, v in per.items()}
                           for loss, per in grads.items()},
                     forward_diff=diff[i],
                     large={n: c[i] for n, c in large.items()})
                for i in range(batch)]

    @staticmethod
    def _clean_prediction(model, outputs, x) -> Tensor:
        """Clean classes [B]: the fused score of ``predict``, or (a model
        whose scores have no ``'fused'`` entry) ``fused_logits``."""
        scores = []
        for sample in outputs:
            score = sample.pred_score
            if isinstance(score, dict):
                if 'fused' not in score:
                    return model.fused_logits(x).argmax(1)
                score = score['fused']
            scores.append(score)
        return torch.stack(scores).argmax(1)

    def _predict(self, p: Perturbation, model, x, y,
                 rows: Tensor) -> Optional[list]:
        """Predicted classes [B] under ``p`` (None off the subsample when
        ``p`` is expensive); None once ``p`` has failed.

        A failing perturbation is logged with its traceback, skipped for
        the rest of the evaluation (a partial accuracy would be misleading)
        and reported as failed; the others go on.
        """
        if p.name in self._failed:
            return None
        batch = y.shape[0]
        if not self._expensive(p):
            rows = torch.ones(batch, dtype=torch.bool)
        if not bool(rows.any()):
            return [None] * batch
        start = time.perf_counter()
        try:
            if bool(rows.all()):  # no copy of the whole batch
                pred = p.predict(model.fused_logits, x, y,
                                 self._spaces).argmax(1).tolist()
            else:
                positions, sub, labels = _select(x, y, rows)
                pred = _scatter(p.predict(model.fused_logits, sub, labels,
                                          self._spaces).argmax(1).tolist(),
                                positions, batch)
        except Exception as err:  # noqa: BLE001 (reported, not swallowed)
            self._failed[p.name] = f'{type(err).__name__}: {err}'
            self.logger.error(
                f'robust {self.stage}: perturbation {p.name!r} failed and '
                'is skipped from here on (reported as failed); the other '
                'perturbations continue', exc_info=True)
            return None
        finally:
            self._seconds[p.name] += time.perf_counter() - start
        return pred

    def _radii(self, model, x, y, feats) -> Dict[str, list]:
        """Joint radius r(x) and per-modality r^(m)(x), with |a|, from the
        clean pass's features (a fresh forward if they were not captured)."""
        start = time.perf_counter()
        logits = model.unimodal_logits(feats) \
            if feats and set(feats) == set(model.modalities) \
            else model.modality_logits(x)
        z = torch.stack([logits[m] for m in model.modalities])
        a, b = model.integration_weights(), model.bias
        joint = certified_radius(z, a, b, self._tau, y, 'min', True)
        per_modality = modality_radii(z, a, b, self._tau, y, 'min')
        self._seconds['certify'] += time.perf_counter() - start
        return dict(radius=joint.tolist(), modality_radii=[
            dict(zip(model.modalities, values))
            for values in per_modality.T.tolist()])

    def _attach_records(self, outputs, labels: List[int],
                        preds: Dict[str, Optional[List[int]]],
                        radii: Dict[str, list],
                        extra: Optional[Dict[str, list]] = None) -> None:
        """One plain-Python record per sample, for RobustAccMetric.

        A perturbation left out of a clip by ``subset`` has the prediction
        None there and its name in the record's ``skipped`` list.
        """
        failed = dict(self._failed)
        extra = extra or {}
        for i, sample in enumerate(outputs):
            record = dict(label=labels[i],
                          preds={k: None if v is None else v[i]
                                 for k, v in preds.items()},
                          **{k: v[i] for k, v in radii.items()},
                          **{k: v[i] for k, v in extra.items()})
            skipped = [k for k, v in preds.items()
                       if v is not None and v[i] is None]
            if skipped:
                record['skipped'] = skipped
            if failed:
                record['failed'] = failed
            sample.set_field(record, RECORD_FIELD)
        for name, pred in preds.items():
            if pred is not None:
                # Off-subsample clips (None) are not evaluated: they count
                # neither as correct nor in the denominator.
                done = [(p, t) for p, t in zip(pred, labels) if p is not None]
                self._correct[name] += sum(int(p == t) for p, t in done)
                self._evaluated[name] = self._evaluated.get(name, 0) + \
                    len(done)

    def _log_progress(self) -> None:
        batches = self._batches
        parts = []
        for name, correct in self._correct.items():
            if name in self._failed:
                parts.append(f'{name} FAILED')
                continue
            seen = self._evaluated.get(name, 0)
            parts.append(f'{name} {correct / max(seen, 1):.3f} '
                         f'({self._seconds[name] / batches:.2f}s/batch)')
        if self._tau is not None:
            parts.append(
                f'certify {self._seconds["certify"] / batches:.2f}s/batch')
        self.logger.info(
            f'robust {self.stage} {self._progress.line(batches)}; accuracy '
            'on this rank so far: ' + ' | '.join(parts))

    # ---- the end -----------------------------------------------------------

    @property
    def failed(self) -> Dict[str, str]:
        """``{perturbation name: error}`` of this evaluation."""
        return dict(self._failed)

    def protocol(self) -> dict:
        """Protocol metadata of this evaluation, for ``build_report``.

        Returns:
            dict: ``run`` (stage, model and head class, the ``run_info`` of
            :meth:`begin`, seconds per batch of every perturbation on this
            rank), ``modalities``, ``clamp_ranges`` (valid raw range per
            modality, None = never clamped) and ``certification``.
        """
        model = self.model
        head = getattr(model, 'head', None)
        if head is None:  # an mmaction2 recognizer
            head = getattr(model, 'cls_head', None)
        run = dict(stage=self.stage, model=type(model).__name__,
                   head=type(head).__name__)
        run.update(self._run_info)
        run['seconds_per_batch_rank0'] = {
            k: v / max(self._num_batches, 1)
            for k, v in self._seconds.items()}
        return dict(run=run, modalities=list(model.modalities),
                    clamp_ranges=self._clamp_ranges(),
                    certification=dict(self._certification),
                    subset=None if self.subset is None else dict(
                        self.subset, dataset_size=self._num_samples,
                        perturbations=[p.name for p in self.perturbations
                                       if self._expensive(p)]
                        + list(self.large)),
                    trust=None if self.trust is None else dict(
                        self.trust, large={n: a.describe()
                                           for n, a in self.large.items()}),
                    smoothing=[r.describe() for r in self.smoothing])

    def end(self) -> dict:
        """Log the failures; return :meth:`protocol`."""
        if self._failed:
            self.logger.warning(
                f'robust {self.stage}: perturbations failed and are '
                f'reported as failed: {sorted(self._failed)}')
        return self.protocol()

    def _clamp_ranges(self) -> Dict[str, Optional[List[float]]]:
        return {m: None if space is None or not space.bounded else
                [None if v is None else v.tolist()
                 for v in (space.lo, space.hi)]
                for m, space in self._spaces.items()}

    # ---- a whole pass, for drivers without an mmengine loop ----------------

    def run(self, dataloader, metric: Optional[RobustAccMetric] = None,
            tau_loader=None, tau_data: str = 'certify.tau_data',
            run_info: Optional[dict] = None) -> dict:
        """Evaluate every batch of ``dataloader`` (this rank's shard).

        Call it on every rank. Records are gathered in dataset order by
        ``metric`` (``BaseMetric.collect_results``), padding dropped, so
        the metrics equal a single-process run.

        Args:
            dataloader: raw batches (an mmengine dataloader whose
                ``dataset`` has a length).
            metric (RobustAccMetric, optional): bound here. Defaults to
                None (a ``RobustAccMetric()``).
            tau_loader, tau_data, run_info: as in :meth:`begin`.

        Returns:
            dict: ``metrics`` (prefixed scalars, on every rank),
            ``records`` (all samples on the main process, else None),
            ``protocol`` (:meth:`protocol`) and ``metric``.
        """
        metric = metric if metric is not None else RobustAccMetric()
        self.bind(metric)
        self.begin(len(dataloader), tau_loader, tau_data, run_info,
                   num_samples=len(dataloader.dataset))
        metric.begin(True, self.certified)
        for batch in dataloader:
            metric.process(batch, self.process(batch))
        metrics = metric.evaluate(len(dataloader.dataset))
        return dict(metrics=metrics,
                    records=metric.records if is_main_process() else None,
                    protocol=self.end(), metric=metric)


def _select(x: Dict[str, Tensor], y: Tensor, rows: Tensor
            ) -> Tuple[List[int], Dict[str, Tensor], Tensor]:
    """The batch positions where ``rows`` is True, and the inputs and
    labels of those clips."""
    index = torch.nonzero(rows).flatten()
    return (index.tolist(), {m: t[index.to(t.device)] for m, t in x.items()},
            y[index.to(y.device)])


def _scatter(values: list, positions: List[int], batch: int) -> list:
    """A ``batch``-long column with ``values`` at ``positions``, None
    elsewhere (clips left out by the subsample)."""
    column: list = [None] * batch
    for value, i in zip(values, positions):
        column[i] = value
    return column


def _is_attack(p: Perturbation) -> bool:
    """True for an adversarial attack (or a worst case over one or more)."""
    if isinstance(p, WorstCase):
        return any(_is_attack(m) for m in p.perturbations)
    return isinstance(p, (MultiModalAutoAttack, BallAttack))


def _largest(eps) -> float:
    return max(eps.values()) if isinstance(eps, dict) else float(eps)


def _budget_key(eps):
    """A hashable form of a budget (float or per-modality dict)."""
    if isinstance(eps, dict):
        return tuple(sorted((m, format_value(v)) for m, v in eps.items()))
    return format_value(eps)


def check_tau_data(runner: Runner, certify: Optional[dict]) -> None:
    """Fail early if ``certify`` asks for data the config does not have.

    Raises:
        ValueError: ``tau_data='train'`` without a ``train_dataloader``.
    """
    if certify is not None and certify['tau_source'] == 'estimate' and \
            certify['tau_data'] == 'train' and \
            runner.cfg.get('train_dataloader') is None:
        raise ValueError(
            "certify.tau_data='train' needs `train_dataloader` in the "
            "config; use tau_data='self' (the evaluated data) or a "
            'dataloader config dict')


def resolve_tau_loader(runner: Runner, certify: dict, own_loader,
                       stage: str) -> Tuple[object, str]:
    """The data for ``certify.tau_source='estimate'`` and its name.

    ``tau_data='self'`` is ``own_loader`` (the evaluated split), ``'train'``
    the config's ``train_dataloader`` and a dict a dataloader config, both
    built with the runner's seed.

    Raises:
        ValueError: ``'train'`` without a ``train_dataloader`` in the config.
    """
    check_tau_data(runner, certify)
    spec = certify['tau_data']
    if spec == 'self':
        return own_loader, f'the {stage} dataloader'
    if spec == 'train':
        return Runner.build_dataloader(runner.cfg.train_dataloader,
                                       seed=runner.seed), 'train_dataloader'
    return Runner.build_dataloader(spec, seed=runner.seed), 'certify.tau_data'
