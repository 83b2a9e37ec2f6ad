"""Scaling laws: fit ``L(x) = E + A·x^(−α)`` to a table of runs, with 95 % confidence intervals and plots.

``x`` is training compute ``C`` (FLOPs), parameters ``N`` or tokens ``D``. The runs table has one row
per run with columns ``name, params, tokens, flops, loss`` (CSV, JSON lines, or a JSON list); ``flops``
may be left out, it is then ``6·N·D`` (and the report says so). A folder of vavam training runs
(``vavam train video`` outputs) is read directly (:func:`runs_from_folders`).

Fit (:func:`fit_power_law`): least squares on the log-loss residual ``log L̂(x_i) − log L_i`` (relative
errors: the small losses of large runs weigh as much as the large ones) with ``E ≥ 0``, ``A > 0``,
``α > 0``. ``x`` is divided by its geometric mean ``x_ref`` during the fit (``A' = A·x_ref^(−α)`` is then of
order one), ``A`` is parametrised by its log, and the optimiser starts from several ``E`` (fractions of the
smallest loss, each with the log-linear fit of ``L − E`` as ``A``, ``α``), keeping the best.

Confidence intervals, both reported:

- bootstrap over runs (``bootstrap`` resamples with replacement, seeded; percentile intervals;
  resamples with fewer than 3 distinct ``x`` are skipped and counted);
- covariance of the fit, ``s²·(JᵀJ)⁻¹`` with ``s² = RSS / (n − 3)``, Student-t quantile with ``n − 3``
  degrees of freedom (``E``, ``α`` symmetric, clipped at 0; ``A`` symmetric in ``log A``).

The optimiser bounds ``α`` by 10: a bootstrap interval reaching 10 means the data do not pin ``α`` down.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

LAWS = {"compute": "flops", "params": "params", "tokens": "tokens"}
LAW_LABELS = {"compute": "training compute C (FLOPs)", "params": "parameters N", "tokens": "tokens D"}
LAW_SYMBOLS = {"compute": "C", "params": "N", "tokens": "D"}
_NUMERIC = ("params", "tokens", "flops", "loss")
_ALIASES = {"compute": "flops", "c": "flops", "n": "params", "d": "tokens", "run": "name"}


# ------------------------------------------------------------------------------ runs table


@dataclass
class RunTable:
    """Runs of a scaling study: one entry per run; a column absent from the source is None.

    Attributes:
        names: run names ``[n]``.
        params, tokens, flops, loss: float64 ``[n]`` (all > 0).
        source: where the table came from.
        notes: how derived columns were obtained (shown in the report).
    """

    names: list[str]
    loss: np.ndarray
    params: np.ndarray | None = None
    tokens: np.ndarray | None = None
    flops: np.ndarray | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def column(self, law: str) -> np.ndarray:
        """The ``x`` of a law (``"compute"``, ``"params"`` or ``"tokens"``) ``[n]``; a clear error when absent."""
        if law not in LAWS:
            raise ValueError(f"law must be one of {tuple(LAWS)}, got {law!r}")
        values = getattr(self, LAWS[law])
        if values is None:
            raise ValueError(f"{self.source}: column {LAWS[law]!r} is needed for the {law} law but is absent")
        return values


def _parse_value(value: Any, column: str, where: str) -> float | None:
    """A positive finite number, or None when the cell is empty / missing."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise TypeError(f"{where}: {column} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {column} must be a number, got {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"{where}: {column} must be positive and finite, got {value!r}")
    return x


def table_from_rows(rows: Sequence[tuple[str, dict[str, Any]]], source: str) -> RunTable:
    """Build a :class:`RunTable` from ``(location, row)`` pairs (location names the file and row in errors).

    Columns (case-insensitive; ``compute`` is an alias of ``flops``): ``loss`` required in every row;
    ``params``, ``tokens``, ``flops`` optional as columns, but a present column needs a value in every
    row — except ``flops``, whose empty cells are filled with ``6·N·D`` (noted).
    """
    if not rows:
        raise ValueError(f"{source}: no runs")
    parsed: list[dict[str, Any]] = []
    present: set[str] = set()
    for where, row in rows:
        if not isinstance(row, dict):
            raise TypeError(f"{where}: a run must be an object with named columns, got {type(row).__name__}")
        clean = {_ALIASES.get(str(k).strip().lower(), str(k).strip().lower()): v for k, v in row.items()}
        present |= {k for k in clean if k in _NUMERIC}
        parsed.append(clean)
    if "loss" not in present:
        raise ValueError(f"{source}: no 'loss' column (columns: name, params, tokens, flops, loss)")
    columns: dict[str, list[float | None]] = {c: [] for c in _NUMERIC if c in present}
    names: list[str] = []
    for i, ((where, _), row) in enumerate(zip(rows, parsed)):
        name = str(row.get("name") or "").strip() or f"run{i}"
        names.append(name)
        for column, values in columns.items():
            value = _parse_value(row.get(column), column, f"{where} (run {name!r})")
            if value is None and column != "flops":
                raise ValueError(f"{where} (run {name!r}): {column} is missing")
            values.append(value)
    table = RunTable(names, np.asarray(columns["loss"], dtype=np.float64), source=source)
    for column in ("params", "tokens"):
        if column in columns:
            setattr(table, column, np.asarray(columns[column], dtype=np.float64))
    flops = columns.get("flops")
    if flops is not None and all(v is not None for v in flops):
        table.flops = np.asarray(flops, dtype=np.float64)
        table.notes.append("flops: from the table")
    elif table.params is not None and table.tokens is not None:
        derived = 6.0 * table.params * table.tokens
        if flops is None:
            table.flops = derived
            table.notes.append("flops: no flops column; computed as 6·N·D from params and tokens")
        else:
            missing = [names[i] for i, v in enumerate(flops) if v is None]
            table.flops = np.asarray([d if v is None else v for v, d in zip(flops, derived)], dtype=np.float64)
            table.notes.append(f"flops: computed as 6·N·D for runs without a value ({', '.join(missing)})")
    elif flops is not None:
        missing = next(i for i, v in enumerate(flops) if v is None)
        raise ValueError(f"{rows[missing][0]} (run {names[missing]!r}): flops is missing and cannot be computed "
                         "as 6·N·D without params and tokens columns")
    return table


def read_runs(path: Path, metric: str = "val/loss") -> RunTable:
    """Read a runs table: ``.csv``, ``.jsonl`` (one object per line), ``.json`` (a list, or ``{"runs": [...]}``),
    or a folder of vavam training runs (:func:`runs_from_folders`, loss = ``metric``)."""
    path = Path(path)
    if path.is_dir():
        return runs_from_folders(sorted(p.parent for p in path.rglob("summary.json")), metric=metric, source=str(path))
    if not path.is_file():
        raise FileNotFoundError(f"runs table {path} does not exist")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    rows: list[tuple[str, dict[str, Any]]] = []
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames:
            raise ValueError(f"{path}: empty CSV (expected a header: name,params,tokens,flops,loss)")
        for row in reader:
            if any(v not in (None, "") for v in row.values()):
                extra = row.pop(None, None)
                if extra:
                    raise ValueError(f"{path} line {reader.line_num}: more cells than header columns")
                rows.append((f"{path} line {reader.line_num}", row))
    elif suffix in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((f"{path} line {number}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if isinstance(data, dict) and isinstance(data.get("runs"), list):
            data = data["runs"]
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of runs or {{'runs': [...]}}")
        rows = [(f"{path} run {i}", r) for i, r in enumerate(data)]
    else:
        raise ValueError(f"{path}: unknown table format {suffix!r} (use .csv, .jsonl or .json, or a runs folder)")
    return table_from_rows(rows, str(path))


def _positive_count(value: Any, what: str) -> int | None:
    """``value`` as a positive int (None when absent); a clear error naming ``what`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _run_global_batch(run: Path, summary: dict[str, Any] | None = None) -> tuple[int, str]:
    """Windows per optimiser step of a vavam training run (the global batch) and how it was obtained.

    ``vavam train video`` records ``data.batch_size`` (per-device micro-batch), ``data.world_size``,
    ``data.accumulate`` and ``data.global_batch`` in the Lightning hparams (``logs/version_*/hparams.yaml``,
    newest version first), and ``scale.global_batch`` in ``summary.json``. The recorded global batch is used
    when there is one; otherwise ``batch_size x world_size x accumulate`` (a factor not recorded counts as 1,
    as in runs written before multi-device training).

    Returns:
        ``(global batch, source)``, ``source`` one of ``"global_batch"``, ``"batch_size x world_size x accumulate"``.
    """
    import yaml

    versions = sorted(run.glob("logs/version_*/hparams.yaml"), key=lambda p: int(p.parent.name.split("_")[-1]))
    for hp in reversed(versions):
        data = (yaml.safe_load(hp.read_text()) or {}).get("data") or {}
        recorded = _positive_count(data.get("global_batch"), f"{hp}: data.global_batch")
        if recorded is not None:
            return recorded, "global_batch"
        batch = _positive_count(data.get("batch_size"), f"{hp}: data.batch_size")
        if batch is not None:
            world = _positive_count(data.get("world_size"), f"{hp}: data.world_size") or 1
            accumulate = _positive_count(data.get("accumulate"), f"{hp}: data.accumulate") or 1
            return batch * world * accumulate, "batch_size x world_size x accumulate"
    recorded = _positive_count(((summary or {}).get("scale") or {}).get("global_batch"),
                               f"{run}/summary.json: scale.global_batch")
    if recorded is not None:
        return recorded, "global_batch"
    raise ValueError(f"{run}: no batch size found (logs/version_*/hparams.yaml with data.global_batch or "
                     "data.batch_size, or summary.json with scale.global_batch)")


def runs_from_folders(folders: Sequence[Path], metric: str = "val/loss", source: str = "") -> RunTable:
    """Runs table of vavam VaViM training runs (``vavam train video`` output folders).

    Per run: the model config and step count from ``summary.json``, the global batch (windows per optimiser
    step over all devices and accumulation steps, :func:`_run_global_batch`) from the Lightning hparams, the
    loss = ``metrics[metric]`` of ``summary.json`` (the last validation). Then ``params`` = matmul parameters
    (blocks + tied readout, :func:`vavam.eval.flops.video_matmul_params`), ``tokens`` = steps x global batch
    x window positions, plus, for a cool-down, its pretraining's steps x global batch x positions (recorded
    in ``summary.json`` as ``pretraining``; older cool-downs count their own steps only, said in a note),
    ``flops`` = analytic training FLOPs ``6·N·D`` + causal attention (:func:`vavam.eval.flops.video_train_flops`).
    """
    from vavam.config import VideoConfig
    from vavam.eval.flops import video_matmul_params, video_train_flops
    from vavam.io import read_json

    source = source or ", ".join(str(f) for f in folders)
    if not folders:
        raise ValueError(f"{source}: no training run (no summary.json found)")
    rows = []
    batch_sources: dict[str, list[str]] = {}
    cooldowns: list[str] = []  # runs whose tokens include their pretraining's
    unknown_start: list[str] = []  # cool-downs written before summaries recorded their pretraining
    for run in map(Path, folders):
        summary = read_json(run / "summary.json")
        config_dict = summary.get("config") or {}
        try:
            config = VideoConfig(**config_dict)
        except TypeError:
            raise ValueError(f"{run}/summary.json: not a VaViM training run (config {sorted(config_dict)})") from None
        metrics = summary.get("metrics") or {}
        if metric not in metrics:
            raise ValueError(f"{run}/summary.json: no metric {metric!r} (has {sorted(metrics)}); "
                             "train with val_tokens or choose another metric")
        steps = int(summary.get("steps") or 0)
        if steps <= 0:
            raise ValueError(f"{run}/summary.json: steps must be positive, got {summary.get('steps')!r}")
        seq = config.num_frames * config.tokens_per_frame
        global_batch, how = _run_global_batch(run, summary)
        batch_sources.setdefault(how, []).append(run.name)
        tokens = steps * global_batch * seq
        pretraining = summary.get("pretraining") or {}
        if pretraining.get("steps") and pretraining.get("global_batch"):  # a cool-down: add what it started from
            tokens += int(pretraining["steps"]) * int(pretraining["global_batch"]) * seq
            cooldowns.append(run.name)
        elif summary.get("init_from"):
            unknown_start.append(run.name)
        rows.append((str(run), {"name": run.name, "params": video_matmul_params(config), "tokens": tokens,
                                "flops": video_train_flops(config, tokens, seq), "loss": metrics[metric]}))
    table = table_from_rows(rows, source)
    table.notes[:] = [f"loss: {metric} of each run's summary.json",
                      "params: matmul parameters (blocks + tied readout; embedding lookups excluded)",
                      "tokens: steps x global batch x window positions; global batch: "
                      + "; ".join(_batch_note(how, names, len(folders)) for how, names in batch_sources.items()),
                      "flops: analytic 6·N·D + causal attention 6·L·n·d·D (vavam.eval.flops)"]
    if cooldowns:
        table.notes.append("cool-downs count their pretraining's tokens too (summary.json: pretraining): "
                           + ", ".join(cooldowns))
    if unknown_start:
        table.notes.append("cool-downs counted with their own steps only (their summary.json predates the "
                           "pretraining record): " + ", ".join(unknown_start))
    return table


def _batch_note(how: str, names: list[str], total: int) -> str:
    """``"<how> (runs a, b)"``, or just ``how`` when it applies to every run."""
    what = "recorded global_batch" if how == "global_batch" else how + " of the hparams"
    return what if len(names) == total else f"{what} ({', '.join(names)})"


# ------------------------------------------------------------------------------ fitting


@dataclass
class PowerLawFit:
    """``L(x) = E + A·x^(−α)`` fitted to ``n`` runs.

    Attributes:
        E, A, alpha: point estimates (``A`` in the units of ``x``).
        x_ref: the reference scale used in the fit (geometric mean of ``x``).
        cov: covariance ``[3, 3]`` of ``(E, log A', α)`` with ``A' = A·x_ref^(−α)``.
        dof: ``n − 3``.
        rss: residual sum of squares of the log-loss residuals.
        samples: bootstrap fits ``[B, 3]`` of ``(E, log A', α)`` (empty without bootstrap).
        skipped: bootstrap resamples skipped (fewer than 3 distinct x).
        level: confidence level of the intervals.
    """

    E: float
    A: float
    alpha: float
    x_ref: float
    cov: np.ndarray
    n: int
    rss: float
    samples: np.ndarray
    skipped: int = 0
    level: float = 0.95

    @property
    def log_a_ref(self) -> float:
        """``log A'`` = log of the reducible loss at ``x_ref``."""
        return math.log(self.A) - self.alpha * math.log(self.x_ref)

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        """``L(x) = E + A·x^(−α)``, same shape as ``x``."""
        return self.E + self.reducible(x)

    def reducible(self, x: np.ndarray | float) -> np.ndarray:
        """The reducible part ``A·x^(−α)``, same shape as ``x``."""
        u = np.asarray(x, dtype=np.float64) / self.x_ref
        return np.exp(self.log_a_ref - self.alpha * np.log(u))

    def _t(self) -> float:
        from scipy import stats

        return float(stats.t.ppf(0.5 + self.level / 2, max(self.dof, 1)))

    @property
    def dof(self) -> int:
        return self.n - 3

    def _quantiles(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = 100 * (1 - self.level) / 2
        return np.percentile(values, q, axis=0), np.percentile(values, 100 - q, axis=0)

    def bootstrap_ci(self) -> dict[str, tuple[float, float]] | None:
        """Percentile intervals of ``E``, ``A``, ``α`` over the bootstrap fits (None without bootstrap)."""
        if len(self.samples) == 0:
            return None
        e, log_a_ref, alpha = self.samples.T
        with np.errstate(over="ignore"):  # an A too large for float64 is inf
            a = np.exp(log_a_ref + alpha * math.log(self.x_ref))
        out = {}
        for key, values in (("E", e), ("A", a), ("alpha", alpha)):
            lo, hi = self._quantiles(values)
            out[key] = (float(lo), float(hi))
        return out

    def covariance_ci(self) -> dict[str, tuple[float, float]]:
        """Intervals from the fit's covariance (t quantile, n − 3 dof): ``E``, ``α`` (clipped at 0), ``A`` (in log A).

        A bound the data do not limit is ``inf`` (e.g. ``A``'s upper bound when ``log A`` is poorly determined);
        with ``α`` at its lower bound 0 only ``E + A`` is determined, and ``E`` and ``A`` get ``(0, inf)``; see
        :meth:`identification_issues`.
        """
        t = self._t()
        diag = np.diag(self.cov)
        sd = np.where(np.isfinite(diag), np.sqrt(np.clip(diag, 0, None)), math.inf)
        lx = math.log(self.x_ref)
        # log A = log A' + α·log x_ref
        var_log_a = float(self.cov[1, 1] + lx * lx * self.cov[2, 2] + 2 * lx * self.cov[1, 2])
        sd_log_a = math.sqrt(max(var_log_a, 0.0)) if math.isfinite(var_log_a) else math.inf
        out = {
            "E": (max(self.E - t * sd[0], 0.0), self.E + t * sd[0]),
            "A": (self.A * _safe_exp(-t * sd_log_a), self.A * _safe_exp(t * sd_log_a)),
            "alpha": (max(self.alpha - t * sd[2], 0.0), self.alpha + t * sd[2]),
        }
        if self.alpha <= _ALPHA_MIN * 1e3:
            # at α = 0 the law is the constant E + A: only the sum is determined, so neither E nor A is bounded above.
            # The covariance says so only through a near-singular Jacobian, whose huge but finite variances depend
            # on the rounding of the machine (A's upper bound came out as 8e301 on one CPU and inf on another)
            out["E"] = (0.0, math.inf)
            out["A"] = (0.0, math.inf)
        return out

    def identification_issues(self) -> list[str]:
        """Why the data may not pin ``α`` down (empty when they do): ``α`` at an optimiser bound, its covariance
        interval reaching 0, or an unbounded covariance interval."""
        issues = []
        if self.alpha <= _ALPHA_MIN * 1e3:
            issues.append("α sits at its lower bound 0 (the loss does not decrease with x)")
        if self.alpha >= _ALPHA_MAX * 0.999:
            issues.append(f"α sits at the optimiser's upper bound {_ALPHA_MAX:g}")
        ci = self.covariance_ci()
        if ci["alpha"][0] <= 0.0:
            issues.append(f"the {self.level:.0%} covariance interval of α reaches 0")
        unbounded = [key for key, (lo, hi) in ci.items() if not (math.isfinite(lo) and math.isfinite(hi))]
        if unbounded:
            issues.append(f"the covariance interval of {', '.join(unbounded)} is unbounded")
        return issues

    def predict_ci(self, x: np.ndarray | float, method: Literal["bootstrap", "delta"] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Interval of ``L(x)``: bootstrap percentiles, or the delta method on the fit's covariance (t quantile).

        ``method`` None: bootstrap when the fit has bootstrap samples, else the delta method.
        """
        x = np.asarray(x, dtype=np.float64)
        if method is None:
            method = "bootstrap" if len(self.samples) else "delta"
        if method == "bootstrap":
            if not len(self.samples):
                raise ValueError("this fit has no bootstrap samples (fit with bootstrap > 0)")
            return self._quantiles(_law(self.samples, x / self.x_ref))
        if method != "delta":
            raise ValueError(f"method must be 'bootstrap' or 'delta', got {method!r}")
        g = self._gradient(x)  # [3, *x]
        var = np.einsum("i...,ij,j...->...", g, self.cov, g)
        half = self._t() * np.sqrt(np.clip(var, 0, None))
        mid = self.predict(x)
        return mid - half, mid + half

    def reducible_ci(self, x: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Interval of the reducible part ``A·x^(−α)`` (bootstrap percentiles, else delta method in log)."""
        x = np.asarray(x, dtype=np.float64)
        if len(self.samples):
            e = self.samples[:, 0].reshape((-1,) + (1,) * x.ndim)
            return self._quantiles(_law(self.samples, x / self.x_ref) - e)
        lu = np.log(x / self.x_ref)
        var = self.cov[1, 1] + lu * lu * self.cov[2, 2] - 2 * lu * self.cov[1, 2]
        half = self._t() * np.sqrt(np.clip(var, 0, None))
        mid = self.reducible(x)
        return mid * np.exp(-half), mid * np.exp(half)

    def _gradient(self, x: np.ndarray) -> np.ndarray:
        """d L(x) / d (E, log A', α), ``[3, *x]``."""
        r = self.reducible(x)
        return np.stack([np.ones_like(r), r, -r * np.log(x / self.x_ref)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: estimates, intervals, fit statistics."""
        boot = self.bootstrap_ci()
        return {
            "E": self.E, "A": self.A, "alpha": self.alpha, "x_ref": self.x_ref, "n": self.n, "rss": self.rss,
            "level": self.level, "ci_covariance": self.covariance_ci(), "ci_bootstrap": boot,
            "alpha_identified": not self.identification_issues(), "identification_issues": self.identification_issues(),
            "bootstrap_fits": len(self.samples), "bootstrap_skipped": self.skipped,
            "cov_E_logAref_alpha": self.cov.tolist(),
        }


def _law(params: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Loss of fits ``params [B, 3]`` (E, log A', α) at ``u [*S]`` (x / x_ref) -> ``[B, *S]``."""
    shape = (-1,) + (1,) * u.ndim
    e, la, al = (params[:, i].reshape(shape) for i in range(3))
    return e + np.exp(la - al * np.log(u))


_ALPHA_MAX = 10.0
_ALPHA_MIN = 1e-9  # the optimiser's lower bound of α (> 0)


def _safe_exp(value: float) -> float:
    """``exp(value)``, ``inf`` where it overflows (``math.exp`` raises instead)."""
    try:
        return math.exp(value)
    except OverflowError:
        return math.inf


def _solve(log_u: np.ndarray, log_loss: np.ndarray, start: np.ndarray, tol: float):
    """One bounded least-squares fit of the log-loss residual from ``start`` (E, log A', α)."""
    from scipy.optimize import least_squares

    def residual(p: np.ndarray) -> np.ndarray:
        return np.log(p[0] + np.exp(p[1] - p[2] * log_u)) - log_loss

    def jacobian(p: np.ndarray) -> np.ndarray:
        r = np.exp(p[1] - p[2] * log_u)
        pred = p[0] + r
        return np.stack([1.0 / pred, r / pred, -r * log_u / pred], axis=1)

    bounds = ([0.0, -np.inf, _ALPHA_MIN], [np.inf, np.inf, _ALPHA_MAX])
    return least_squares(residual, start, jac=jacobian, bounds=bounds,
                         method="trf", x_scale="jac", ftol=tol, xtol=tol, gtol=tol, max_nfev=2000)


def _starts(log_u: np.ndarray, loss: np.ndarray) -> list[np.ndarray]:
    """Starting points: E = fractions of min(loss), (log A', α) from a log-linear fit of L − E."""
    starts = []
    for frac in (0.0, 0.5, 0.8, 0.9, 0.97, 0.995):
        e = frac * float(loss.min())
        slope, intercept = np.polyfit(log_u, np.log(loss - e), 1)
        alpha = float(np.clip(-slope, 1e-3, _ALPHA_MAX * 0.9))
        starts.append(np.array([e, float(intercept), alpha]))
    return starts


def _best_fit(log_u: np.ndarray, log_loss: np.ndarray, starts: Sequence[np.ndarray], tol: float):
    best = None
    for start in starts:
        sol = _solve(log_u, log_loss, start, tol)
        if best is None or sol.cost < best.cost:
            best = sol
    return best


def fit_power_law(
    x: np.ndarray | Sequence[float],
    loss: np.ndarray | Sequence[float],
    bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    progress: bool = False,
) -> PowerLawFit:
    """Fit ``L(x) = E + A·x^(−α)`` (``E ≥ 0``, ``A > 0``, ``α > 0``) by least squares on ``log L``.

    Args:
        x: compute, parameters or tokens of each run, ``[n]`` (> 0; at least 3 distinct values).
        loss: the runs' losses ``[n]`` (> 0), n ≥ 4.
        bootstrap: resamples of the runs (with replacement) for percentile intervals; 0: none.
        seed: seed of the bootstrap.
        level: confidence level of the intervals.
        progress: show a progress bar over the bootstrap.

    Returns:
        :class:`PowerLawFit`.
    """
    x = np.asarray(x, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if x.ndim != 1 or loss.shape != x.shape:
        raise ValueError(f"x and loss must be 1-D of the same length, got shapes {x.shape} and {loss.shape}")
    for name, values in (("x", x), ("loss", loss)):
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"{name} must be positive and finite, got {values.tolist()}")
    if len(x) < 4:
        raise ValueError(f"need at least 4 runs to fit 3 parameters with an error estimate, got {len(x)}")
    if len(np.unique(x)) < 3:
        raise ValueError(f"need at least 3 distinct x values, got {np.unique(x).tolist()}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be ≥ 0, got {bootstrap}")
    x_ref = float(np.exp(np.log(x).mean()))
    log_u, log_loss = np.log(x / x_ref), np.log(loss)
    sol = _best_fit(log_u, log_loss, _starts(log_u, loss), tol=1e-14)
    p = sol.x
    n = len(x)
    rss = float(2 * sol.cost)
    jac = sol.jac
    cov = np.linalg.pinv(jac.T @ jac) * (rss / (n - 3) if n > 3 else 0.0)
    samples, skipped = _bootstrap(x, loss, x_ref, p, bootstrap, seed, progress)
    e, log_a_ref, alpha = (float(v) for v in p)
    return PowerLawFit(E=e, A=math.exp(log_a_ref + alpha * math.log(x_ref)), alpha=alpha, x_ref=x_ref, cov=cov,
                       n=n, rss=rss, samples=samples, skipped=skipped, level=level)


def _bootstrap(x: np.ndarray, loss: np.ndarray, x_ref: float, start: np.ndarray, count: int, seed: int,
               progress: bool) -> tuple[np.ndarray, int]:
    """Refit on ``count`` resamples of the runs; returns fits ``[B, 3]`` and the number skipped."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    n = len(x)
    fits, skipped = [], 0
    for _ in tqdm(range(count), desc="bootstrap", disable=not progress, leave=False):
        idx = rng.integers(0, n, size=n)
        if len(np.unique(x[idx])) < 3:
            skipped += 1
            continue
        log_u, log_loss = np.log(x[idx] / x_ref), np.log(loss[idx])
        fits.append(_solve(log_u, log_loss, start, tol=1e-10).x)
    return (np.asarray(fits, dtype=np.float64).reshape(-1, 3), skipped)


# ------------------------------------------------------------------------------ plot


def plot_fit(fit: PowerLawFit, x: np.ndarray, loss: np.ndarray, path: Path, xlabel: str,
             target: float | None = None, title: str = "") -> Path:
    """Two panels saved as a PNG: log–log ``L − E`` vs ``x`` (points, fit, CI band of ``A·x^(−α)``), and
    ``L`` vs ``x`` (log x) with the fit, its CI band and ``E``. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo_x, hi_x = float(x.min()), float(x.max())
    if target is not None:
        lo_x, hi_x = min(lo_x, target), max(hi_x, target)
    grid = np.geomspace(lo_x / 1.5, hi_x * 1.5, 200)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    excess = loss - fit.E
    shown = excess > 0
    ax0.loglog(x[shown], excess[shown], "o", color="C0",
               label="runs" + ("" if shown.all() else f" ({int((~shown).sum())} at or below E not shown)"))
    band = fit.reducible_ci(grid)
    ax0.fill_between(grid, band[0], band[1], color="C1", alpha=0.25, label=f"{fit.level:.0%} CI")
    ax0.loglog(grid, fit.reducible(grid), "-", color="C1", label=f"A·x^(−α), α = {fit.alpha:.3f}")
    ax0.set_xlabel(xlabel)
    ax0.set_ylabel("L − E")
    ax0.legend(fontsize=8)
    ax0.grid(True, which="both", alpha=0.3)
    pband = fit.predict_ci(grid)
    ax1.fill_between(grid, pband[0], pband[1], color="C1", alpha=0.25, label=f"{fit.level:.0%} CI")
    ax1.semilogx(grid, fit.predict(grid), "-", color="C1", label="E + A·x^(−α)")
    ax1.semilogx(x, loss, "o", color="C0", label="runs")
    ax1.axhline(fit.E, color="gray", ls="--", lw=1, label=f"E = {fit.E:.3f}")
    if target is not None:
        ax1.plot([target], [float(fit.predict(target))], "*", color="C3", ms=12, label="prediction")
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel("loss")
    ax1.legend(fontsize=8)
    ax1.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------ CLI


def _g(v: float) -> str:
    return f"{v:.4g}"


def eval_scaling(
    runs: Path,
    out: Path,
    x: Literal["compute", "params", "tokens", "all"] = "all",
    bootstrap: int = 1000,
    seed: int = 0,
    target: float | None = None,
    metric: str = "val/loss",
) -> dict:
    """Fit scaling laws L = E + A·x^(−α) in compute, parameters and/or tokens to a table of runs.

    Args:
        runs: runs table (.csv / .jsonl / .json with columns name, params, tokens, flops, loss; flops
            optional, then 6·N·D) or a folder of ``vavam train video`` runs.
        out: output folder: evaluation.json, report.md / report.html, scaling_<law>.png.
        x: which law(s): compute, params, tokens, or all (the laws whose columns the table has and take at
            least 3 distinct values over the runs; the others are skipped, with a note).
        bootstrap: bootstrap resamples over runs for the 95 % intervals (0: covariance intervals only).
        seed: bootstrap seed.
        target: predict the loss at this x (FLOPs for the compute law; with a single law, its units).
        metric: loss metric of a runs folder's summary.json (default the validation loss).
    """
    from vavam.checks import check_nonnegative_int
    from vavam.eval.report import Section, Table, save_evaluation

    table = read_runs(Path(runs), metric=metric)
    skipped_laws: list[str] = []
    if x == "all":
        laws = [law for law in LAWS if getattr(table, LAWS[law]) is not None]
        if not laws:
            raise ValueError(f"{table.source}: no params, tokens or flops column to fit a law on")
        for law in list(laws):  # e.g. a folder of runs of one model size: no params law, but compute and tokens
            distinct = np.unique(table.column(law))
            if len(distinct) < 3:
                laws.remove(law)
                skipped_laws.append(f"{law} law skipped: {LAWS[law]} takes {len(distinct)} distinct value(s) over "
                                    f"the runs ({', '.join(_g(float(v)) for v in distinct)}); a law needs 3")
        if not laws:
            raise ValueError(f"--runs {runs}: no law to fit with --x all: " + "; ".join(skipped_laws))
    elif x in LAWS:
        laws = [x]
    else:
        raise ValueError(f"--x must be one of compute, params, tokens, all; got {x!r}")
    if target is not None and not (math.isfinite(target) and target > 0):
        raise ValueError(f"--target must be positive and finite, got {target}")
    check_nonnegative_int(bootstrap, "--bootstrap", "covariance intervals only")
    fits = {}  # every law is fitted before anything is written: a fit that fails leaves no partial --out
    for law in laws:
        try:
            fits[law] = fit_power_law(table.column(law), table.loss, bootstrap=bootstrap, seed=seed,
                                      progress=bootstrap >= 200)
        except ValueError as exc:
            raise ValueError(f"--runs {runs}, {law} law (--x {law}, column {LAWS[law]!r}): {exc}") from exc
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"runs": len(table), "source": table.source, "notes": table.notes,
                               "bootstrap": bootstrap, "seed": seed, "laws": {}, "skipped_laws": skipped_laws}
    rows, sections = [], []
    figures = []
    unidentified: list[str] = []
    for law in laws:
        xs, fit = table.column(law), fits[law]
        entry = fit.to_dict()
        issues = entry["identification_issues"]
        if issues:
            only_ci = all(i.startswith("the ") and "interval of α reaches 0" in i for i in issues)
            consequence = ("α may be 0 at this confidence: the loss may not fall with x over these runs." if only_ci
                           else "Its intervals and predictions are not meaningful.")
            unidentified.append(f"- {law} law: **α not identified**: {'; '.join(issues)}. {consequence}")
        law_target = target if target is not None and (law == "compute" or len(laws) == 1) else None
        if law_target is not None:
            delta = fit.predict_ci(law_target, method="delta")
            boot_t = fit.predict_ci(law_target, method="bootstrap") if len(fit.samples) else None
            entry["target"] = {"x": law_target, "loss": float(fit.predict(law_target)),
                               "ci_bootstrap": None if boot_t is None else (float(boot_t[0]), float(boot_t[1])),
                               "ci_delta": (float(delta[0]), float(delta[1]))}
        results["laws"][law] = entry
        figure = f"scaling_{law}.png"
        plot_fit(fit, xs, table.loss, out / figure, LAW_LABELS[law], law_target,
                 title=f"L = E + A·{LAW_SYMBOLS[law]}^(−α)")
        figures.append(figure)
        boot, covci = fit.bootstrap_ci(), fit.covariance_ci()
        for key, value in (("E", fit.E), ("A", fit.A), ("alpha", fit.alpha)):
            b = boot[key] if boot else (float("nan"), float("nan"))
            rows.append([law, key, _g(value), f"[{_g(b[0])}, {_g(b[1])}]" if boot else "–",
                         f"[{_g(covci[key][0])}, {_g(covci[key][1])}]"])
        if law_target is not None:
            t = entry["target"]
            b = t["ci_bootstrap"]
            rows.append([law, f"L({_g(law_target)})", _g(t["loss"]), f"[{_g(b[0])}, {_g(b[1])}]" if b else "–",
                         f"[{_g(t['ci_delta'][0])}, {_g(t['ci_delta'][1])}]"])
    fit_text = (
        f"{len(table)} runs from `{table.source}`. Least squares on log-loss residuals, E ≥ 0, A > 0, α > 0. "
        f"95 % intervals: bootstrap over runs ({bootstrap} resamples, seed {seed}, percentile) and from the "
        "fit's covariance (Student t, n − 3 dof; A's interval in log A; predictions by the delta method). The parameter and token laws are "
        "fitted over all runs as given (for a grid of sizes x durations, pass the runs at one duration or "
        "one size to get the law in the other variable)."
    )
    notes = ("\n".join(f"- {n}" for n in table.notes) + "".join(f"\n- {skip}" for skip in skipped_laws)
             + "".join(f"\n{u}" for u in unidentified))
    sections.append(Section("Fitted laws", fit_text + "\n\n" + notes,
                             [Table(["law", "parameter", "estimate", "95% CI (bootstrap)", "95% CI (covariance)"],
                                    rows)], figures))
    run_rows = [[name] + [_g(float(getattr(table, c)[i])) if getattr(table, c) is not None else "–"
                          for c in ("params", "tokens", "flops")] + [_g(float(table.loss[i]))]
                for i, name in enumerate(table.names)]
    sections.append(Section("Runs", "", [Table(["run", "params", "tokens", "flops", "loss"], run_rows)]))
    save_evaluation(out, "scaling", "Scaling laws", results, sections)
    for law in laws:
        f = results["laws"][law]
        warn = "" if f["alpha_identified"] else "; alpha not identified: " + "; ".join(f["identification_issues"])
        print(f"{law}: E = {f['E']:.4g}, A = {f['A']:.4g}, alpha = {f['alpha']:.4g} ({f['n']} runs{warn})")
    for skipped in skipped_laws:
        print(skipped)
    return results
