"""``make tune``: an equal-budget hyperparameter search per upsampler, then its best
configuration trained on fresh seeds, as a Hydra sweeper (``hydra/sweeper=tune``).

Optuna drives the search by ask-and-tell, and the sweep's own launcher runs the trials (in
parallel on this machine, or on SLURM), so a search is a sweep like any other: its jobs are
checked first, print their lines, log their runs and are reported at the end. Hydra's Optuna
sweeper plugin is not used: its last release (1.3.0) pins optuna < 3.

- Every upsampler (every cell of the command line's grid) gets the same number of trials,
  drawn by the same sampler with the same seed; with the default random sampler all of them
  see the same configurations, so the search is paired as the seeds are.
- Trials train on the training split less ``data.validation`` held-out images and are scored
  on those (validation FD); the test split is never looked at until the final runs.
- Each upsampler's search is an MLflow run; its trials' runs nest under it.
- The Optuna journal sits in the sweep folder: the same command again continues the search,
  asking again the trials an interruption cut off (their runs resume from their checkpoints).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

from src.config.schema import ConfigError
from src.core import messages
from src.run.sweep_job import SWEEP_ID_FILE
from src.study import grid, launchers
from src.tracking import naming, store
from src.tracking.naming import metric

JOURNAL = "optuna.journal"  # the searches' state, in the sweep folder
SAMPLERS = ("random", "tpe")
SLOTS = 1_000_003  # trial slots per sampler seed: seeds of two searches' slots never meet
MAX_SAMPLER_SEED = (2**32 - 1) // SLOTS - 1  # NumPy seeds stop at 2**32 - 1
SEARCH_TAG = "search_sweep"  # on a search's parent run: the sweep it belongs to
# What a final run adds: scored on the test split, with every training image.
FINAL_OVERRIDES = ("data.validation=0",)


@dataclass(frozen=True)
class Search:
    """One grid cell's search: its overrides, Optuna study and parent MLflow run."""

    label: str
    overrides: list[str]
    study: Any
    parent_run: str


def is_search(sweeper: Any) -> bool:
    """Whether the sweep's sweeper is this one (``hydra/sweeper=tune``)."""
    return str(sweeper.get("_target_", "")).endswith(".TuneSweeper")


def planned_jobs(sweeper: Any, cells: int) -> int:
    """The jobs a sweep of ``cells`` grid cells launches: one each, or with this sweeper
    each cell's trials and final seeds."""
    if not is_search(sweeper):
        return cells
    return cells * (int(sweeper.trials) + len(sweeper.final_seeds))


def check_search(sweeper: Any) -> None:
    """The search's settings, in one line each (raises ``ConfigError``)."""
    if not 0 <= sweeper.sampler_seed <= MAX_SAMPLER_SEED:
        raise ConfigError(
            f"hydra.sweeper.sampler_seed={sweeper.sampler_seed} must be in [0, {MAX_SAMPLER_SEED}]"
        )
    if sweeper.trials < 1:
        raise ConfigError(f"hydra.sweeper.trials={sweeper.trials} must be >= 1")
    if sweeper.sampler not in SAMPLERS:
        raise ConfigError(f"hydra.sweeper.sampler={sweeper.sampler!r}: use one of {SAMPLERS}")
    if not sweeper.final_seeds:
        raise ConfigError("hydra.sweeper.final_seeds is empty: the best configs need seeds")
    check_space({key: dict(bounds) for key, bounds in sweeper.space.items()})


def trial_probes(sweeper: Any, cell: list[str]) -> list[list[str]]:
    """A trial's overrides for ``cell`` with every searched key at its low end, its middle and
    its high end: what the sweep checks before the first trial, so that a bad search override
    or bound fails in one line, not in half the trials."""
    probes = []
    for where in (0.0, 0.5, 1.0):
        chosen = [
            f"{key}={float(b['low']) + where * (float(b['high']) - float(b['low']))!r}"
            for key, b in sweeper.space.items()
        ]
        probes.append([*cell, *sweeper.search, *chosen])
    return probes


def diverged_trial(run: Any) -> bool:
    """Whether ``run`` is a search trial that ended FAILED because its training diverged."""
    reason = run.data.tags.get(store.FAILURE_TAG, "")
    return naming.TRIAL_TAG in run.data.tags and reason.startswith("TrainingDiverged")


def check_space(space: dict[str, Any]) -> None:
    """Each searched key has ``low < high`` (and ``low > 0`` on a log scale), in one line."""
    if not space:
        raise ConfigError("hydra.sweeper.space is empty: name at least one key to search")
    for key, bounds in space.items():
        low, high = float(bounds["low"]), float(bounds["high"])
        if not low < high:
            raise ConfigError(f"hydra.sweeper.space.{key}: low={low} must be below high={high}")
        if bounds.get("log", False) and low <= 0:
            raise ConfigError(f"hydra.sweeper.space.{key}: a log scale needs low > 0")


class TuneSweeper(Sweeper):
    """Hydra sweeper: the command line's grid, each cell searched by ``trials`` trials over
    ``space`` and then trained at its best configuration on ``final_seeds``."""

    def __init__(
        self,
        trials: int,
        sampler: str,
        sampler_seed: int,
        space: dict[str, Any],
        search: list[str],
        final_seeds: list[int],
    ) -> None:
        self.trials = trials
        self.sampler = sampler
        self.sampler_seed = sampler_seed
        self.space = {key: dict(bounds) for key, bounds in space.items()}
        self.search = list(search)
        self.final_seeds = list(final_seeds)
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.job_index = 0

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        """Keep the config and build the sweep's launcher (as Hydra's own sweepers do)."""
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        """Search every cell with the same budget, then train each best configuration."""
        assert self.config is not None
        # checked with the sweep's jobs, before any work (src/study/sweep.py: _check_jobs)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_id = (sweep_dir / SWEEP_ID_FILE).read_text().strip()
        searches = [
            self._search(label, overrides, sweep_dir, sweep_id)
            for label, overrides in _cells(arguments)
        ]
        returns = []
        while batch := self._next_trials(searches):
            returns.append(self._launch_trials(batch))
        for search in searches:
            _close_parent(self._uri(), search)
        returns.append(self._launch_finals(searches))
        return returns

    def _uri(self) -> str:
        assert self.config is not None
        return store.resolve_uri(self.config.tracking.uri, self.config.paths.root)

    def _search(self, label: str, overrides: list[str], sweep_dir: Path, sweep_id: str) -> Search:
        """The cell's Optuna study (continued from the journal when there is one), with the
        trials an interruption left running asked again, and its parent run."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(sweep_dir / JOURNAL))
        )
        study = optuna.create_study(
            study_name=label, storage=storage, sampler=self._sampler(0), load_if_exists=True
        )
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"asked_again": trial.number})
            messages.say(f"{label}: trial {trial.number} was interrupted; asking it again")
        parent = _parent_run(self._uri(), self.config, sweep_id, label, self._params())
        return Search(label, overrides, study, parent)

    def _sampler(self, seed: int) -> Any:
        import optuna

        if self.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)

    def _params(self) -> dict[str, Any]:
        """The search's settings, as its parent run's params."""
        shown = {"trials": self.trials, "sampler": self.sampler, "seed": self.sampler_seed}
        for key, bounds in self.space.items():
            scale = "log" if bounds.get("log", False) else "linear"
            shown[f"space.{key}"] = f"{bounds['low']}..{bounds['high']} ({scale})"
        return {**shown, "search": " ".join(self.search)}

    def _next_trials(self, searches: list[Search]) -> list[tuple[Search, Any]]:
        """The next round's trials: as many per search as keep the launcher's workers busy,
        the same number for every search, none past ``trials``."""
        assert self.config is not None
        workers = launchers.workers(self.config.hydra.launcher) or len(searches)
        per_search = max(1, workers // len(searches))
        batch = []
        for search in searches:
            left = self.trials - _counted(search.study)
            batch += [(search, self._ask(search)) for _ in range(min(per_search, left))]
        return batch

    def _ask(self, search: Search) -> Any:
        """The search's next trial. The sampler is seeded by the trial's slot (trials so far,
        those an interruption cut off not counted), so that a search continued in a new process
        draws what it would have drawn without the interruption, and every upsampler draws the
        same configuration in the same slot."""
        import optuna

        failed = optuna.trial.TrialState.FAIL
        slot = sum(t.state != failed for t in search.study.get_trials(deepcopy=False))
        search.study.sampler = self._sampler(self.sampler_seed * SLOTS + slot)
        distributions = {
            key: optuna.distributions.FloatDistribution(
                float(b["low"]), float(b["high"]), log=bool(b.get("log", False))
            )
            for key, b in self.space.items()
        }
        return search.study.ask(distributions)

    def _launch_trials(self, batch: list[tuple[Search, Any]]) -> list[JobReturn]:
        """Run one round of trials and tell each search its trials' validation FD (infinite
        when the trial diverged or failed: a real outcome of that configuration)."""
        jobs = []
        for search, trial in batch:
            chosen = [f"{key}={value!r}" for key, value in trial.params.items()]
            identity = [f"tune.parent_run={search.parent_run}", f"tune.trial={trial.number}"]
            jobs.append([*search.overrides, *self.search, *chosen, *identity, "resume=true"])
        returns = self._launch(jobs)
        for (search, trial), job in zip(batch, returns, strict=True):
            value, outcome = _score(self._uri(), job)
            trial.set_user_attr("outcome", outcome[:1000])
            search.study.tell(trial, value)
        return returns

    def _launch_finals(self, searches: list[Search]) -> list[JobReturn]:
        """Each search's best configuration on the final seeds, scored on the test split."""
        jobs = []
        for search in searches:
            best = search.study.best_trial.params
            chosen = [f"{key}={value!r}" for key, value in best.items()]
            messages.say(f"{search.label}: best of {self.trials} trials: {' '.join(chosen)}")
            for seed in self.final_seeds:
                parent = f"tune.parent_run={search.parent_run}"  # its own checkpoints
                jobs.append(
                    [
                        *search.overrides,
                        *chosen,
                        *FINAL_OVERRIDES,
                        f"seed={seed}",
                        parent,
                        "resume=true",
                    ]
                )
        return self._launch(jobs)

    def _launch(self, jobs: list[list[str]]) -> list[JobReturn]:
        returns = list(self.launcher.launch(jobs, initial_job_idx=self.job_index))
        self.job_index += len(jobs)
        return returns


def _cells(arguments: list[str]) -> list[tuple[str, list[str]]]:
    """The command line's grid: one (label, overrides) per cell, the label naming only what
    varies."""
    cells = grid.split(arguments)
    varying = [i for i in range(len(cells[0])) if len({c[i] for c in cells}) > 1]
    return [(",".join(cell[i] for i in varying) or "all", cell) for cell in cells]


def _counted(study: Any) -> int:
    """Trials that spent the budget: finished, diverged or failed; not those asked again."""
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return len(done) + len(
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    )


def _score(uri: str, job: JobReturn) -> tuple[float, str]:
    """A trial's validation FD and outcome: from its job's result, or from its run when the job
    found the run already trained (resumed after its last round); infinite when it diverged or
    failed, as both spend the trial."""
    result = job.return_value if job.status.name == "COMPLETED" else {}
    status = result.get("status", "FAILED")
    if status in ("FINISHED", "SKIPPED"):
        if "fd" in result:
            return float(result["fd"]), "finished"
        run = store.open_client(uri).get_run(result["run_id"])
        return float(run.data.metrics.get(metric("fd"), float("inf"))), "finished"
    error = str(result.get("error", "the job raised"))
    return float("inf"), "diverged" if error.startswith("TrainingDiverged") else f"failed: {error}"


def _parent_run(uri: str, config: Any, sweep_id: str, label: str, params: dict[str, Any]) -> str:
    """The id of the cell's search run in MLflow: the sweep's earlier one when continuing,
    else a new one with the search's settings as params."""
    tracking = config.tracking
    experiment_id = store.ensure_experiment(
        uri, tracking.experiment, tracking.artifact_location, tracking.lock_seconds
    )
    client = store.open_client(uri)
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{SEARCH_TAG} = '{sweep_id}' and tags.search = '{label}'",
    )
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    tags = {SEARCH_TAG: sweep_id, "search": label, "upsampler": _upsampler(label)}
    run = store.start_run(uri, experiment_id, f"search-{label}", tags)
    run.log_params(params)
    return run.run_id


def _upsampler(label: str) -> str:
    for item in label.split(","):
        key, _, value = item.partition("=")
        if key == "upsampler":
            return value
    return label


def _close_parent(uri: str, search: Search) -> None:
    """The search run's end: its best validation FD, and FINISHED."""
    client = store.open_client(uri)
    best = search.study.best_value
    if best != float("inf"):
        client.log_metric(search.parent_run, "search/best_fd", best)
    client.set_terminated(search.parent_run, "FINISHED")
