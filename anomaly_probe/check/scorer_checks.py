"""Check a user's scorer against the reference engines and name the likely bug where it disagrees.

The scorer is called on every sample in sequence, first with the full cache and then with the
compressed method, exactly as a user's evaluation loop would call it, so a cache that is not reset
between calls shows up from the second call on. Each call runs under
:mod:`~anomaly_probe.check.scorer_guard`: past ``--scorer-timeout`` it is interrupted and the remaining
scorer checks are not run; ``sys.exit`` or an exception is an ERROR result with its message; a call that
changes the model (weights, buffers, train mode, attention, hooks) fails its check, and the model is
reloaded before any reference engine runs, so no later check blames the engines for it.
"""

from __future__ import annotations

import dataclasses
import traceback

import numpy as np
import torch

from anomaly_probe.check.context import CheckContext
from anomaly_probe.check.diagnose import Diagnosis, compare, diagnose
from anomaly_probe.check.engine_checks import Check
from anomaly_probe.check.references import target_variants
from anomaly_probe.check.result import ERROR, FAIL, PASS, CheckResult
from anomaly_probe.check.scorer_guard import ModelState, ScorerTimeout, time_limit
from anomaly_probe.check.scorer_load import Scorer, ScorerError, call_scorer
from anomaly_probe.methods import FullCache
from anomaly_probe.methods.base import POSITION_MODES, CacheMethod


class ScorerSuite:
    """The scorer's checks and what they share: the previous call's input and the causes found so far.

    Parameters
    ----------
    fn : callable
        The loaded scorer (:func:`~anomaly_probe.check.scorer_load.load_scorer`).
    spec : str
        The ``--scorer`` text, for messages.
    timeout : float
        Seconds one call (one sample) may take (``--scorer-timeout``).
    """

    def __init__(self, fn: Scorer, spec: str, timeout: float = 600.0) -> None:
        self.fn = fn
        self.spec = spec
        self.timeout = timeout
        self.previous: torch.Tensor | None = None  # ids of the last call, whatever the method
        self.causes: dict[str, Diagnosis] = {}
        self.pristine: ModelState | None = None  # the model before the scorer's first call
        self.stopped: str | None = None  # why the remaining scorer checks are not run (a timeout)

    def checks(self, method: CacheMethod) -> list[Check]:
        """``scorer.full`` then ``scorer.<method>.<mode>``."""
        return [Check("scorer.full", lambda ctx: self.check(ctx, FullCache())),
                Check(f"scorer.{method.name}.{method.position_mode}", lambda ctx: self.check(ctx, method))]

    # ------------------------------------------------------------------ one method, every sample
    def check(self, ctx: CheckContext, method: CacheMethod) -> CheckResult:
        if self.stopped:
            return CheckResult("", ERROR, f"{method.label()}: not run: {self.stopped}")
        description = method.describe() | {"label": method.label()}
        rows: list[dict] = []
        for s, ids in enumerate(ctx.samples):
            user, error = self._call(ctx, ids, description, s)
            previous, self.previous = self.previous, ids
            changed = self._restore_if_changed(ctx)
            if changed:
                how = f" ({error})" if error else ""
                return CheckResult("", FAIL, f"{method.label()}: the scorer changed the model on sample {s}{how}: "
                                             f"{changed}; a fresh copy was loaded for the remaining checks",
                                   details={"samples": rows, "cause": "model-changed", "cause_text": changed})
            if error:
                return CheckResult("", ERROR, f"{method.label()}: {error}", details={"samples": rows})
            ref = ctx.score(method, "auto", s).nll
            first, biggest = compare(user, ref, ctx.tolerance)
            if user.size == ref.size and first is None:
                diag = Diagnosis("ok", "matches the reference", None, biggest)
            else:
                diag = diagnose(user, ref, ctx.tolerance, variants=self._variants(ctx, method, s, ids, previous),
                                requested_mode=None if method.is_full else method.position_mode)
            rows.append({"sample": s, "tokens": int(ids.numel()), "returned": int(user.size),
                         "non_finite": int((~np.isfinite(user)).sum()), **diag.to_dict()})
        return self._result(method, rows, ctx.tolerance)

    def _call(self, ctx: CheckContext, ids: torch.Tensor, description: dict, s: int) -> tuple[np.ndarray | None, str]:
        """The scorer's NLL on sample ``s``, or None and one sentence on how the call ended instead.

        Raises
        ------
        ScorerError
            The scorer returned something that is not per-token NLL (bad input, exit code 2).
        """
        if self.pristine is None:
            self.pristine = ModelState.of(ctx.model)
        try:
            with time_limit(self.timeout, f"--scorer {self.spec} on sample {s}"):
                return call_scorer(self.fn, self.spec, ctx.model, ids, description), ""
        except (ScorerError, KeyboardInterrupt):
            raise
        except ScorerTimeout:
            self.stopped = f"the scorer timed out ({self.timeout:g} s, --scorer-timeout) in an earlier check"
            return None, f"the scorer did not return within {self.timeout:g} s on sample {s} (--scorer-timeout)"
        except SystemExit as exc:
            return None, f"the scorer called sys.exit({exc.code!r}) on sample {s}"
        except BaseException as exc:  # noqa: BLE001 - the user's code crashed: an ERROR result, the suite goes on
            return None, f"the scorer raised {_where(exc)} on sample {s}"

    def _restore_if_changed(self, ctx: CheckContext) -> str | None:
        """What the last call changed in the model (then the model is reloaded), or None."""
        changed = ModelState.of(ctx.model).change_from(self.pristine)
        if changed:
            ctx.reload_model()
            if ModelState.of(ctx.model).change_from(self.pristine):
                raise RuntimeError("reloading the model did not restore it after the scorer changed it")
        return changed

    def _variants(self, ctx: CheckContext, method: CacheMethod, s: int, ids: torch.Tensor,
                  previous: torch.Tensor | None) -> dict[str, np.ndarray]:
        """Every bug signature for this sample (each a reference series; see :func:`diagnose`)."""
        prefix = None if method.is_full else method.capacity + 1  # identical to the full cache up to here
        out = target_variants(ctx.model, ids, prefix)
        if not method.is_full:
            for mode in POSITION_MODES:
                if mode != method.position_mode:
                    try:
                        other = dataclasses.replace(method, position_mode=mode)
                        out[f"mode:{mode}"] = ctx.score(other, "auto", s).nll
                    except Exception:  # noqa: BLE001 - e.g. no RoPE: that signature is just unavailable
                        pass
        if previous is not None:
            for key, prev in (("concat", previous[:-1]), ("concat_whole", previous)):
                joined = torch.cat([prev, ids])
                out[key] = ctx.score_ids(method, "auto", joined).nll[prev.numel():]
        return out

    def _result(self, method: CacheMethod, rows: list[dict], tol: float) -> CheckResult:
        worst = max(r["max_abs_dnll"] for r in rows)
        bad = [r for r in rows if r["cause"] != "ok"]
        T = rows[0]["tokens"]
        details = {"method": method.describe() | {"label": method.label()}, "samples": rows}
        if not bad:
            return CheckResult("", PASS, f"{method.label()}: {len(rows)} samples x {T - 1} tokens match the reference "
                                         f"(max |dNLL| {worst:.1e} <= {tol:.0e} nats)",
                               observed=worst, threshold=tol, unit="nats", details=details | {"cause": "ok"})
        first_bad = next((r for r in bad if r["cause"] != "unknown"), bad[0])  # the most telling sample
        cause, text = first_bad["cause"], first_bad["text"]
        if cause == "no-cache-reset" and rows[0]["cause"] == "ok":
            text = (f"cache not reset between samples: sample 0 matches, sample {first_bad['sample']} matches the "
                    f"reference run on sample {first_bad['sample'] - 1} followed by sample {first_bad['sample']} "
                    f"(first differs at token {first_bad['first_mismatch']}, max |dNLL| "
                    f"{first_bad['max_abs_dnll']:.3g} nats)")
        elif cause == "unknown":
            known = next((d for d in self.causes.values() if d.cause not in ("ok", "unknown")), None)
            if known is not None:
                text += f"; the full-cache check found: {known.cause} (fix that first)"
        self.causes[method.label()] = Diagnosis(cause, text, first_bad["first_mismatch"], first_bad["max_abs_dnll"])
        return CheckResult("", FAIL, f"{method.label()}: sample {first_bad['sample']}: likely cause: {text}",
                           observed=worst, threshold=tol, unit="nats",
                           details=details | {"cause": cause, "cause_text": text})


def _where(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    loc = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}" + (f": {msg}" if msg else "") + loc
