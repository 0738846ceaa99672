"""Evaluation sweep: every (method, theta, M) setting over a dataset, resumable, with reports.

``run_eval(llm, config, out_dir)`` is what ``tools/eval.py`` calls. For each setting of the
sweep (``sweep_settings``), the problems are cut into fixed batches of ``batch_prompts``
(default: all problems, one batch) and each batch is one ``llm.eager`` call.

Resume. The batch is the unit of work and of resumption. After a call returns, one record per
prompt is appended to ``generations.jsonl`` (``JsonlLog``: fsynced lines, damaged tail cut on
reopen). On a rerun with the same ``--out``, a batch whose prompts all have records for the
setting is skipped; any other batch is run again whole and only its missing records are
appended. Batches are fixed slices of the dataset and every call's seed depends only on
(seed, batch index), so a rerun batch reproduces the same sequences and an interrupted-then-
resumed sweep ends with the same records and metrics as an uninterrupted one. Parameters that
change what is generated are stored in ``results.json``; resuming into a folder made with
different ones is refused (``ConfigError``) rather than mixing two experiments.

Budget semantics. ``eager`` and ``eager-adapt`` reallocate the sequences EAGer-init saved
(M x N in total) across the N prompts *of one call*. With the default (one batch) this is the
paper's dataset-wide budget; with ``batch_prompts=B`` the budget is M x B per batch. ``deepconf``
and ``eager-deepconf`` decide per prompt (at most M sequences, or M unpruned ones), so batching
does not change them.

Statistics. Every metric row gets 95% bootstrap intervals over problems and the comparison with
parallel sampling subsampled to its #T (``report.add_intervals``, ``stats.py``).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from eager_core.eager.deepconf_params import CONFIDENCE_METHODS, DeepConfParams
from eager_core.eager.params import METHODS, EagerParams
from eager_core.errors import ConfigError
from eager_core.eval.answers import is_correct
from eager_core.eval.datasets import LoadedDataset, Problem, build_prompt, load_dataset_with_errors
from eager_core.eval.io_utils import JsonlLog, write_json_atomic
from eager_core.eval.progress import Progress
from eager_core.eval.records import Setting, output_record, setting_metrics
from eager_core.eval.report import (add_intervals, environment, format_table, make_plots, parallel_baseline,
                                   reference_theta)
from eager_core.eval.stats import N_BOOT

RESULTS = "results.json"
GENERATIONS = "generations.jsonl"
# Parameters that change the generated records: a resumed run must match them exactly.
_FINGERPRINT = ("dataset", "limit", "seed", "temperature", "max_tokens", "prompt_template", "batch_prompts",
                "top_k_entropy", "ckpt", "dtype")


@dataclass
class EvalConfig:
    """Everything that defines a sweep. ``batch_prompts=None`` means one batch of all problems."""

    dataset: str
    limit: int | None = None
    seed: int = 0
    methods: Sequence[str] = ("parallel", "eager-init", "eager", "eager-adapt")
    thetas: Sequence[float] = (2.2,)
    # Methods that run every theta; the others run only the sweep's median theta (reference_theta).
    # None: every EAGer method sweeps (a theta sweep of one method is cheaper than of all).
    theta_sweep_methods: Sequence[str] | None = None
    max_sequences: Sequence[int] = (8,)
    temperature: float = 0.6
    max_tokens: int = 64
    prompt_template: str | None = None
    batch_prompts: int | None = None
    top_k_entropy: int = 20
    ckpt: str | None = None          # recorded only; the caller builds the LLM
    dtype: str = "float32"
    extra: dict = field(default_factory=dict)   # free-form notes stored in results.json
    # DeepConf methods (DeepConfParams); each percentile is a setting of its own
    confidence_percentiles: Sequence[float] = (90.0,)
    warmup_traces: int = 4
    window_size: int = 2048
    top_k_confidence: int = 20
    bootstrap: int = N_BOOT       # resamples of every interval (changes no record)

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"methods {list(self.methods)}: expected a non-empty subset of {', '.join(METHODS)}")
        if any(m != "parallel" for m in self.methods) and not self.thetas:
            raise ConfigError("thetas: at least one theta is needed for the EAGer methods")
        if self.theta_sweep_methods is not None:
            stray = [m for m in self.theta_sweep_methods if m not in self.methods or m in ("parallel", "deepconf")]
            if stray:
                raise ConfigError(f"theta_sweep_methods {stray}: expected methods of the sweep that take a theta")
        if not self.max_sequences or any(not isinstance(m, int) or m < 1 for m in self.max_sequences):
            raise ConfigError(f"max_sequences {list(self.max_sequences)}: expected integers >= 1")
        if self.batch_prompts is not None and self.batch_prompts < 1:
            raise ConfigError(f"batch_prompts={self.batch_prompts}: expected an integer >= 1 or None (all)")
        EagerParams(theta=float(self.thetas[0]) if self.thetas else 2.0, max_sequences=self.max_sequences[0],
                    temperature=self.temperature, max_tokens=self.max_tokens, top_k_entropy=self.top_k_entropy)
        if any(m in CONFIDENCE_METHODS for m in self.methods):
            if not self.confidence_percentiles:
                raise ConfigError("confidence_percentiles: at least one is needed for the DeepConf methods")
            for q in self.confidence_percentiles:
                DeepConfParams(**self.deepconf(q))
        if not isinstance(self.bootstrap, int) or self.bootstrap < 1:
            raise ConfigError(f"bootstrap={self.bootstrap!r}: expected an integer >= 1")

    def deepconf(self, q: float) -> dict:
        """DeepConf's parameters of one setting (recorded in its records' ``setting``)."""
        return dict(confidence_percentile=float(q), warmup_traces=self.warmup_traces, window_size=self.window_size,
                    top_k_confidence=self.top_k_confidence)

    def params(self) -> dict:
        d = asdict(self)
        d["methods"], d["thetas"], d["max_sequences"] = list(self.methods), list(self.thetas), list(self.max_sequences)
        d["confidence_percentiles"] = list(self.confidence_percentiles)
        if self.theta_sweep_methods is not None:
            d["theta_sweep_methods"] = list(self.theta_sweep_methods)
        return d


def sweep_settings(methods: Sequence[str], thetas: Sequence[float], max_sequences: Sequence[int],
                   deepconf: Sequence[dict] = (), theta_sweep_methods: Sequence[str] | None = None) -> list[Setting]:
    """Every setting of the sweep, M outermost; ``parallel`` once per M (it has no theta).

    ``deepconf``: one dict of DeepConf parameters per setting of the DeepConf methods (normally one
    per confidence percentile). ``deepconf`` has no theta; ``eager-deepconf`` runs every theta with each.
    ``theta_sweep_methods``: when given, only these methods run every theta; the other theta methods
    run the median one (``reference_theta``).
    """
    settings = []
    extras = [tuple(d.items()) for d in deepconf] or [()]
    median = [reference_theta(thetas)] if thetas else []

    def thetas_of(method: str) -> Sequence[float]:
        return thetas if theta_sweep_methods is None or method in theta_sweep_methods else median

    for m in max_sequences:
        for method in methods:
            if method == "parallel":
                settings.append(Setting("parallel", None, m))
            elif method == "deepconf":
                settings.extend(Setting(method, None, m, extra) for extra in extras)
            elif method == "eager-deepconf":
                settings.extend(Setting(method, float(t), m, extra) for t in thetas_of(method) for extra in extras)
            else:
                settings.extend(Setting(method, float(t), m) for t in thetas_of(method))
    return list(dict.fromkeys(settings))   # drop duplicates, keep order


def batch_seed(seed: int, batch: int) -> int:
    """The ``EagerParams.seed`` of batch ``batch``: depends on nothing else, so reruns match."""
    return random.Random(f"eval:{seed}:{batch}").getrandbits(31)


def load_problems(config: EvalConfig, log: Callable[[str], None] | None = None) -> LoadedDataset:
    """The config's dataset; each skipped JSONL line is reported through ``log`` (file:line: why)."""
    loaded = load_dataset_with_errors(config.dataset, limit=config.limit, seed=config.seed)
    for skipped in loaded.skipped:
        (log or (lambda msg: None))(f"skipped {skipped}")
    return loaded


def run_eval(llm, config: EvalConfig, out_dir: str | os.PathLike, progress: bool = True,
             log: Callable[[str], None] | None = None, dataset: LoadedDataset | None = None,
             checker: Callable[[str, str], bool] = is_correct) -> dict:
    """Run (or resume) the sweep into ``out_dir``; return the content of ``results.json``.

    ``dataset`` is ``load_problems(config)`` when the caller already loaded it (the CLI does, to
    report dataset errors before loading a model). ``checker(text, gold)`` grades every sequence
    and is the label oracle of method ``eager``; it must be deterministic for resume to hold.
    """
    config.validate()
    log = log or (lambda msg: None)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    loaded = dataset if dataset is not None else load_problems(config, log)
    problems = loaded.problems
    settings = sweep_settings(config.methods, config.thetas, config.max_sequences,
                              [config.deepconf(q) for q in config.confidence_percentiles], config.theta_sweep_methods)
    results_path = os.path.join(out_dir, RESULTS)
    _check_resumable(results_path, config)
    results = {"status": "running", "parameters": config.params(), "environment": environment(llm),
               "dataset": {"n_problems": len(problems), "skipped_lines": [str(s) for s in loaded.skipped]},
               "settings": [], "plots": {}}
    write_json_atomic(results_path, results)

    size = config.batch_prompts or len(problems)
    batches = [problems[i:i + size] for i in range(0, len(problems), size)]
    ks = sorted({1, *config.max_sequences})
    with JsonlLog(os.path.join(out_dir, GENERATIONS)) as gen_log:
        if gen_log.dropped_tail:
            log(f"{gen_log.path}: cut off an incomplete last line ({len(gen_log.dropped_tail)} bytes) "
                "left by an interrupted write")
        bar = Progress(len(settings) * len(problems), enabled=progress)
        rows = []
        for setting in settings:
            for b, batch in enumerate(batches):
                todo = [p for p in batch if not gen_log.is_done(p.id, setting.method, setting.key())]
                if not todo:
                    bar.skip(len(batch))
                    continue
                _run_batch(llm, config, setting, b, batch, gen_log, bar, len(batches), checker)
            rows.append(setting_metrics(_records(gen_log, problems, setting), setting, ks))
            # Intervals of every row so far (a later parallel run adds the deltas of earlier rows).
            add_intervals([(row, _records(gen_log, problems, s)) for row, s in zip(rows, settings)],
                          config.bootstrap, config.seed)
            results["settings"] = rows
            write_json_atomic(results_path, results)
        bar.finish()
        by_setting = {(s.method, s.theta, s.max_sequences, s.extra): _records(gen_log, problems, s) for s in settings}
    thetas = list(config.thetas) if any(m not in ("parallel", "deepconf") for m in config.methods) else []
    results["parallel_subsampled"] = parallel_baseline(by_setting)
    results["plots"] = make_plots(rows, by_setting, thetas, out_dir, top_k=config.top_k_entropy)
    results["table"] = format_table(rows)
    results["status"] = "complete"
    write_json_atomic(results_path, results)
    return results


def _run_batch(llm, config: EvalConfig, setting: Setting, b: int, batch: list[Problem], gen_log: JsonlLog,
               bar: Progress, n_batches: int, checker: Callable[[str, str], bool]) -> None:
    """One ``llm.eager`` call over the whole batch; append the records that are not written yet."""
    params = EagerParams(theta=setting.theta if setting.theta is not None else 2.0,
                         max_sequences=setting.max_sequences, temperature=config.temperature,
                         max_tokens=config.max_tokens, top_k_entropy=config.top_k_entropy,
                         seed=batch_seed(config.seed, b))
    if setting.method in CONFIDENCE_METHODS:
        params = DeepConfParams.from_eager(params, **dict(setting.extra))
    prompts = [build_prompt(p, config.prompt_template) for p in batch]
    extra = {}
    if setting.method == "eager":
        extra = dict(answers=[p.answer for p in batch], checker=checker)
    label = f"{setting.label()} batch {b + 1}/{n_batches}"
    t0 = time.perf_counter()
    with bar.track(label) as tracker:
        outputs = llm.eager(prompts, params, method=setting.method, on_step=tracker.on_step, **extra)
    wall = time.perf_counter() - t0
    stats = dict(getattr(llm, "last_stats", {}) or {})
    batch_stats = {"wall_s": wall, "engine_wall_s": stats.get("wall_s", 0.0),
                   "generated_tokens": stats.get("generated_tokens", sum(o.generated_tokens for o in outputs)),
                   "kv_blocks_peak": stats.get("kv_blocks_peak", 0), "rounds": stats.get("rounds", 1),
                   "n_prompts": len(batch)}
    for problem, output in zip(batch, outputs):
        if not gen_log.is_done(problem.id, setting.method, setting.key()):
            gen_log.append(output_record(problem, setting, output, b, batch_stats, checker))
    bar.batch_done(len(batch), batch_stats["generated_tokens"])


def _records(gen_log: JsonlLog, problems: list[Problem], setting: Setting) -> list[dict]:
    """The setting's records in dataset order (the log may hold them in any order)."""
    mine = {r["prompt_id"]: r for r in gen_log.records
            if r["method"] == setting.method and r["setting"] == setting.key()}
    return [mine[p.id] for p in problems if p.id in mine]


def _check_resumable(results_path: str, config: EvalConfig) -> None:
    """Refuse to resume into a folder whose run generated with different parameters."""
    import json

    if not os.path.exists(results_path):
        return
    try:
        with open(results_path, encoding="utf-8") as fh:
            old = json.load(fh).get("parameters", {})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{results_path}: cannot read the previous run's parameters ({exc}); "
                          "use another --out or remove the folder") from exc
    new = config.params()
    diff = [f"{k}: was {old.get(k)!r}, now {new[k]!r}" for k in _FINGERPRINT if old.get(k) != new[k]]
    if diff:
        raise ConfigError(f"{os.path.dirname(results_path) or '.'} holds a run with other parameters "
                          f"({'; '.join(diff)}); use another --out to start a new run")
