"""``python -m src.train upsampler=transpose seed=1``: one job; add ``--multirun`` for a sweep.

The entry point users type: Hydra composes the config, a run on its own or a sweep's job calls
:func:`src.run.training.train`, and bad input or an interrupt ends in one line.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from src.config import schema
from src.core import messages, signals
from src.run import job_output, sweep_job
from src.run.sweep_progress import Progress
from src.run.training import USER_ERRORS, TrainingDiverged, train
from src.tracking import naming

_task_started = False  # whether Hydra got as far as calling main (its folders exist by then)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, Any]:
    """Hydra entry point: one job of a run or a multirun."""
    from hydra.core.hydra_config import HydraConfig

    global _task_started
    _task_started = True
    hydra_cfg = HydraConfig.get()
    sweep_id = sweep_job.job_sweep_id(hydra_cfg)
    if sweep_id is None:
        return _single_run(cfg)
    return _sweep_job(cfg, sweep_id, hydra_cfg)


def _single_run(cfg: DictConfig) -> dict[str, Any]:
    """A run on its own: bad input and divergence end it with one line, Keras' progress shows."""
    try:
        result = train(cfg)
    except (*USER_ERRORS, TrainingDiverged) as error:
        sys.exit(f"error: {error}")
    if result["status"] == "FINISHED":
        # no losses when a resume found every epoch trained, the run not yet marked finished
        losses = (
            f"d_loss={result['d_loss']:.3f} g_loss={result['g_loss']:.3f} "
            if "d_loss" in result
            else ""
        )
        print(f"{result['name']}: {losses}in {result['seconds']:.1f}s (run {result['run_id']})")
        if result["link"]:
            print(f"{result['name']}: charts and samples at {result['link']} (make ui serves it)")
    return result


def _sweep_job(cfg: DictConfig, sweep_id: str, hydra_cfg: Any) -> dict[str, Any]:
    """A job of a multirun: its output goes to ``job.log`` in its folder; the terminal gets a
    line per epoch and one when it ends. A job that fails is reported and the sweep goes on (its
    MLflow run is FAILED; the sweep's exit status says so at the end)."""
    progress = Progress(hydra_cfg.sweep.dir)
    job = int(hydra_cfg.job.num)
    log = Path(hydra_cfg.runtime.output_dir) / sweep_job.JOB_LOG
    with job_output.redirected(log) as terminal:
        name = f"job {job}"
        try:
            name = naming.run_name(schema.to_settings(cfg))
            result = train(
                cfg,
                sweep_id=sweep_id,
                progress=terminal.out,
                on_run_open=lambda run_id: progress.opened(job, name, run_id),
            )
        except Exception as error:
            traceback.print_exc()  # the whole story for the job's log; the terminal gets a line
            result = {"name": name, "status": "FAILED", "error": schema.one_line(error)}
        counter = progress.finish(job, name, result["status"])
        terminal.out.write(job_output.job_line(result, counter, log))
    return result


def cli() -> None:
    """``main`` with bad input (a wrong type, an unknown key or option, any error Hydra meets
    while composing the config) on one line, and interrupts as one line and their exit status."""
    from hydra.core.hydra_config import HydraConfig

    os.environ["HYDRA_FULL_ERROR"] = "1"  # let them reach us instead of Hydra's multi-line report
    try:
        main()
    except KeyboardInterrupt as error:
        # Ctrl-C or SIGTERM: the runs are KILLED (by train, or here for workers the launcher
        # killed first); one line instead of the traceback.
        stopped = str(error) if isinstance(error, signals.Stopped) else None
        messages.say(
            sweep_job.end_interrupted_sweep() or stopped or "interrupted before any run started"
        )
        sys.exit(signals.exit_status(error))
    except multiprocessing.TimeoutError:
        # joblib's per-job limit (hydra.launcher.timeout): its workers are stopped by now
        ended = sweep_job.end_interrupted_sweep() or "no run was open"
        sys.exit(f"error: a job ran longer than hydra.launcher.timeout seconds; {ended}")
    except Exception as error:
        if isinstance(error, OSError) and error.filename and not _task_started:
            # Hydra creating the run's folder (hydra.run.dir) before the task starts
            sys.exit(f"error: cannot create {error.filename} ({error.strerror}); set hydra.run.dir")
        if HydraConfig.initialized() or sweep_job.started():
            raise  # from a job or the sweep: a bug, whose traceback is needed
        from hydra.errors import HydraException

        # From composing the config, so from the input. Hydra's own errors say which; others
        # (OmegaConf failing on an override Hydra let through) need the context.
        context = "" if isinstance(error, HydraException) else "cannot compose the config: "
        sys.exit(f"error: {context}{schema.one_line(error)}")


if __name__ == "__main__":
    cli()
