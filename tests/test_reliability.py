"""Nothing lost: exact resume after kill -9 or Ctrl-C, atomic checkpoints, determinism, and the guard rails."""

from __future__ import annotations

import ast
import json
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException

import dlcv.training
from dlcv.results import source_commit
from dlcv.training.segmentation import SegmentationTask
from tests.conftest import run_cli

#: 8 training pairs at batch size 1: an epoch is 8 steps, so that a signal sent after the first step of
#: an epoch lands before its end, even on a busy machine.
TRAIN_ARGS = ["--model", "fcn32s", "--epochs", "2", "--batch-size", "1", "--lr", "0.01"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from dlcv.data.synthetic import make_landcover_set

    return make_landcover_set(tmp_path_factory.mktemp("landcover"), train=8, validation=5, size=40, seed=3)


def train_argv(data: Path, config: Path, out: Path, *extra: str) -> list[str]:
    return ["segment", "train", "--data", str(data), "--config", str(config), "--out", str(out), *TRAIN_ARGS, *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data, tiny_segment_config) -> Path:
    from dlcv.cli import main  # a module-scoped fixture cannot take capsys

    run = tmp_path_factory.mktemp("runs") / "uninterrupted"
    assert main(train_argv(data, tiny_segment_config, run)) == 0
    return run


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def callback_state(path: Path, callback: str) -> dict:
    """The state a checkpoint keeps for the callback of class ``callback``."""
    states = checkpoint(path)["callbacks"]
    return next(state for key, state in states.items() if key.startswith(callback))


def history(path: Path) -> list[dict]:
    """The metrics rows a checkpoint carries (MetricsHistory's state)."""
    return callback_state(path, "MetricsHistory")["rows"]


def same_weights(a: Path, b: Path) -> bool:
    first, second = checkpoint(a)["state_dict"], checkpoint(b)["state_dict"]
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def kill_when_printed(
    process: subprocess.Popen, pattern: bytes, timeout: float = 300, sig: signal.Signals = signal.SIGKILL
) -> bytes:
    """Send ``sig`` to ``process`` as soon as its stdout matches ``pattern``; what it printed."""
    seen, deadline = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not re.search(pattern, seen):
            left = deadline - time.monotonic()
            assert left > 0 and selector.select(left), f"no {pattern!r} in time; printed: {seen[-400:]!r}"
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, f"the run ended before {pattern!r}; printed: {seen[-400:]!r}"
            seen += chunk
    process.send_signal(sig)
    process.wait(timeout=timeout)
    return seen


def test_kill_9_mid_epoch_then_resume_ends_like_an_uninterrupted_run(
    uninterrupted, data, tiny_segment_config, tmp_path, capsys
):
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "dlcv", *train_argv(data, tiny_segment_config, run)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    # Lightning's progress bar reports each finished step: kill after step 1 of 2 of epoch 1.
    kill_when_printed(process, rb"Epoch 1: +\d+%\|[^|]*\| 1/8")
    assert process.returncode == -signal.SIGKILL
    lines = (run / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch", "0"]  # killed inside epoch 1
    assert [row["epoch"] for row in history(run / "last.ckpt")] == [0]

    status, _, err = run_cli(capsys, "segment", "train", "--out", run, "--resume")
    assert status == 0, err
    assert (run / "metrics.csv").read_bytes() == (uninterrupted / "metrics.csv").read_bytes()
    assert same_weights(run / "last.ckpt", uninterrupted / "last.ckpt")
    assert not list(run.glob(".*.tmp"))


def ctrl_c_when_printed(argv: list, pattern: bytes, stderr: Path) -> tuple[int, list[str]]:
    """Run ``dlcv argv`` in a subprocess and press Ctrl-C (SIGINT) once its stdout matches ``pattern``;
    (exit status, the lines of its stderr), which must hold no traceback."""
    with stderr.open("wb") as err:
        command = [sys.executable, "-m", "dlcv", *map(str, argv)]
        # A shell's background job (`pytest &`) runs with SIGINT ignored, which children inherit, and a Python
        # started so never raises KeyboardInterrupt; a handler, unlike "ignored", ends at exec: the child gets
        # the default, as a run started from a terminal does.
        outer = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
        finally:
            signal.signal(signal.SIGINT, outer)
        kill_when_printed(process, pattern, sig=signal.SIGINT)
    text = stderr.read_text()
    assert "Traceback" not in text, text
    return process.returncode, text.splitlines()


def test_ctrl_c_mid_epoch_exits_130_with_one_line_then_resume_ends_like_an_uninterrupted_run(
    uninterrupted, data, tiny_segment_config, tmp_path, capsys, monkeypatch
):
    run = tmp_path / "interrupted"
    argv = train_argv(data, tiny_segment_config, run)
    started_at = source_commit()
    status, err = ctrl_c_when_printed(argv, rb"Epoch 1: +\d+%\|[^|]*\| 1/8", tmp_path / "err")
    assert status == 130
    assert [line for line in err if line.startswith("interrupted")] == err[-1:]
    assert err[-1] == f"interrupted: {run / 'last.ckpt'} holds the last finished epoch; --resume continues"
    assert [row["epoch"] for row in history(run / "last.ckpt")] == [0]
    assert not (run / "run.json").exists()  # run.json describes finished runs only
    interrupted_s = callback_state(run / "last.ckpt", "_RunProvenance")["wall_s"]

    # The checkout moved on before the resume.
    monkeypatch.setattr("dlcv.training.runner.source_commit", lambda: "later")
    status, out, err = run_cli(capsys, "segment", "train", "--out", run, "--resume")
    assert status == 0, err
    assert (run / "metrics.csv").read_bytes() == (uninterrupted / "metrics.csv").read_bytes()
    assert same_weights(run / "last.ckpt", uninterrupted / "last.ckpt")
    # The run's time is the interrupted session's (up to last.ckpt) plus the resumed one's; its command
    # the one that started it, its commits both sessions'.
    session = float(re.search(r"wall time: ([\d.]+) s", out).group(1))
    record = json.loads((run / "run.json").read_text())
    assert record["epochs"] == 2 and interrupted_s > 0
    assert record["wall_s"] == pytest.approx(interrupted_s + session, abs=0.1)  # session: printed to 0.1 s
    assert record["command"] == shlex.join(["dlcv", *argv])
    assert record["commit"] == "+".join(c for c in (started_at, "later") if c)


def test_ctrl_c_stops_classification_training_the_same_way(tmp_path):
    from dlcv.data.synthetic import make_classification_set

    data = make_classification_set(tmp_path / "data", classes=3, per_class=8, size=16, seed=2, val_per_class=2)
    run = tmp_path / "run"
    argv = ["classify", "train", "--data", data, "--out", run, "--model", "resnet20_cifar", "--device", "cpu"]
    argv += ["--workers", "0", "--batch-size", "8", "--epochs", "50"]
    status, err = ctrl_c_when_printed(argv, rb"Epoch 1: ", tmp_path / "err")
    assert status == 130
    assert err[-1].startswith(f"interrupted: {run / 'last.ckpt'} holds the last finished epoch")


def test_same_seed_same_metrics_and_deterministic_flag(
    uninterrupted, data, tiny_segment_config, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # restored (or removed) after the test
    try:
        status, _, err = run_cli(capsys, *train_argv(data, tiny_segment_config, tmp_path / "again", "--deterministic"))
        assert status == 0, err
        # Lightning's deterministic=True: deterministic kernels, and cuBLAS's reproducible workspace on GPUs.
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
    assert (tmp_path / "again" / "metrics.csv").read_bytes() == (uninterrupted / "metrics.csv").read_bytes()

    status, _, err = run_cli(
        capsys, *train_argv(data, tiny_segment_config, tmp_path / "other", "--seed", "1", "--epochs", "1")
    )
    assert status == 0, err
    first_epoch = (uninterrupted / "metrics.csv").read_text().splitlines()[1]
    assert (tmp_path / "other" / "metrics.csv").read_text().splitlines()[1] != first_epoch


def test_a_kill_while_writing_a_checkpoint_leaves_the_previous_one_whole(uninterrupted, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.ckpt").write_bytes((uninterrupted / "last.ckpt").read_bytes())
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from dlcv.training.runner import AtomicCheckpointIO

        def save_half_then_die(obj, path):
            with open(path, "wb") as handle:
                handle.write(b"PK half a checkpoint")
                handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save_half_then_die
        AtomicCheckpointIO().save_checkpoint({{"epoch": 99}}, {str(run / "last.ckpt")!r})
        """
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()
    assert len(list(run.glob(".last.ckpt.*.tmp"))) == 1  # the half-written temporary, never renamed
    assert same_weights(run / "last.ckpt", uninterrupted / "last.ckpt")

    from dlcv.training.runner import remove_stale_temporaries

    remove_stale_temporaries(run)  # what a resumed run does first
    assert sorted(p.name for p in run.iterdir()) == ["last.ckpt"]


def test_a_failed_checkpoint_write_keeps_the_previous_one(uninterrupted, tmp_path, monkeypatch):
    from dlcv.training.runner import AtomicCheckpointIO

    target = tmp_path / "last.ckpt"
    target.write_bytes((uninterrupted / "last.ckpt").read_bytes())

    def fail_midway(obj, path):
        Path(path).write_bytes(b"half")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", fail_midway)
    with pytest.raises(OSError, match="No space"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 99}, target)
    assert same_weights(target, uninterrupted / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def poison_loss(self, batch, batch_idx):
    """The loss of epoch 1's first step becomes NaN."""
    loss = SegmentationTask.training_step(self, batch, batch_idx)
    return loss * float("nan") if self.current_epoch == 1 else loss


def poison_weights(self, outputs, batch, batch_idx):
    """A weight becomes infinite after epoch 1's last step, though every loss was finite."""
    if self.current_epoch == 1 and batch_idx == self.trainer.num_training_batches - 1:
        with torch.no_grad():
            next(self.model.parameters()).view(-1)[0] = float("inf")


@pytest.mark.parametrize(
    ("hook", "poison", "message"),
    [("training_step", poison_loss, "training loss became nan"), ("on_train_batch_end", poison_weights, "weights")],
)
def test_non_finite_training_stops_and_keeps_the_last_good_epoch(
    hook, poison, message, data, tiny_segment_config, tmp_path, capsys, monkeypatch
):
    class Poisoned(SegmentationTask):
        pass

    setattr(Poisoned, hook, poison)
    monkeypatch.setattr("dlcv.training.segmentation.SegmentationTask", Poisoned)
    run = tmp_path / "run"
    status, _, err = run_cli(capsys, *train_argv(data, tiny_segment_config, run))
    assert status == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert "--lr" in err
    assert [row["epoch"] for row in history(run / "last.ckpt")] == [0]
    state = checkpoint(run / "last.ckpt")["state_dict"]
    assert all(torch.isfinite(tensor).all() for tensor in state.values())
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # the header and epoch 0


def stand_in_trainer(device: str, epoch: int):
    """What the loss guard reads of a trainer: its device type, epoch and (single-process) decision."""
    from types import SimpleNamespace

    strategy = SimpleNamespace(root_device=torch.device(device), reduce_boolean_decision=lambda decision, all: decision)
    return SimpleNamespace(strategy=strategy, current_epoch=epoch)


@pytest.mark.parametrize(("device", "stops_at"), [("cpu", 1), ("cuda", 3)])
def test_the_loss_guard_reads_a_gpu_loss_back_only_every_few_steps_and_names_the_first_bad_batch(device, stops_at):
    from dlcv.training.callbacks import FiniteLossGuard, TrainingDiverged

    trainer = stand_in_trainer(device, epoch=3)
    guard = FiniteLossGuard(gpu_every=4)
    guard.on_train_epoch_start(trainer, None)
    losses = [1.0, float("nan"), float("inf"), 2.0]
    for batch in range(stops_at):  # on a GPU the NaN of batch 1 is only read back at the 4th step
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(losses[batch])}, None, batch)
    with pytest.raises(TrainingDiverged, match=r"^training loss became nan at epoch 3, batch 1; "):
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(losses[stops_at])}, None, stops_at)


def test_the_loss_guard_checks_a_short_gpu_epoch_at_its_end():
    from dlcv.training.callbacks import FiniteLossGuard, TrainingDiverged

    trainer = stand_in_trainer("cuda", epoch=0)
    guard = FiniteLossGuard(gpu_every=50)
    for batch, loss in enumerate([1.0, float("inf")]):
        guard.on_train_batch_end(trainer, None, torch.tensor(loss), None, batch)
    with pytest.raises(TrainingDiverged, match="became inf at epoch 0, batch 1;"):
        guard.on_train_epoch_end(trainer, torch.nn.Linear(2, 2))
    guard.on_train_epoch_start(trainer, None)  # a new epoch starts clean
    guard.on_train_batch_end(trainer, None, torch.tensor(1.0), None, 0)
    guard.on_train_epoch_end(trainer, torch.nn.Linear(2, 2))


def test_an_absurd_learning_rate_is_one_clear_error(data, tiny_segment_config, tmp_path, capsys):
    status, _, err = run_cli(
        capsys, *train_argv(data, tiny_segment_config, tmp_path / "run", "--lr", "1e12", "--epochs", "1")
    )
    assert status == 2 and err.count("\n") == 1 and "error: " in err, err
    assert "not finite" in err or "training loss became" in err


def test_out_of_gpu_memory_suggests_a_batch_size(data, tiny_segment_config, tmp_path, capsys, monkeypatch):
    def out_of_memory(self, batch, batch_idx):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SegmentationTask, "training_step", out_of_memory)
    status, _, err = run_cli(capsys, *train_argv(data, tiny_segment_config, tmp_path / "run", "--batch-size", "6"))
    assert status == 2 and err == "error: out of GPU memory at batch size 6; try --batch-size 3\n"


def test_out_of_memory_never_suggests_a_batch_the_model_cannot_train_on():
    from dlcv.training.runner import out_of_memory_message

    assert out_of_memory_message(3, min_batch_size=2).endswith("try --batch-size 2")
    assert out_of_memory_message(2, min_batch_size=2).startswith("out of GPU memory even at batch size 2;")
    assert out_of_memory_message(1).startswith("out of GPU memory even at batch size 1;")


def test_impossible_trainer_settings_are_one_clear_error(data, tiny_segment_config, tmp_path, capsys, monkeypatch):
    # More GPUs than the machine has: what Lightning says then, without needing a GPU to say it.
    def too_many_gpus(self, *args, **kwargs):
        raise MisconfigurationException("You requested gpu: [0, 1] But your machine only has: [0]")

    monkeypatch.setattr(L.Trainer, "__init__", too_many_gpus)
    status, _, err = run_cli(capsys, *train_argv(data, tiny_segment_config, tmp_path / "run", "--devices", "2"))
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: --device/--devices/--num-nodes/--precision: You requested gpu: [0, 1] But")


def test_deterministic_kernels_missing_is_one_clear_error(data, tiny_segment_config, tmp_path, capsys, monkeypatch):
    def no_deterministic_kernel(self, batch, batch_idx):
        raise RuntimeError(
            "upsample_bilinear2d_backward_out_cuda does not have a deterministic implementation, but you set "
            "'torch.use_deterministic_algorithms(True)'."
        )

    monkeypatch.setattr(SegmentationTask, "training_step", no_deterministic_kernel)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    try:
        status, _, err = run_cli(capsys, *train_argv(data, tiny_segment_config, tmp_path / "run", "--deterministic"))
    finally:
        torch.use_deterministic_algorithms(False)
    assert status == 2 and err.count("\n") == 1 and "upsample_bilinear2d_backward_out_cuda" in err
    assert "--deterministic" in err


def test_overwrite_replaces_a_run_and_resume_needs_one(uninterrupted, data, tiny_segment_config, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("metrics.csv", "config.yaml", "last.ckpt"):
        (run / name).write_bytes((uninterrupted / name).read_bytes())
    (run / "snapshots" / "epoch_002").mkdir(parents=True)
    (run / "notes.txt").write_text("mine")

    status, _, err = run_cli(capsys, *train_argv(data, tiny_segment_config, run, "--epochs", "1"))
    assert status == 2 and "already holds a run" in err and err.count("\n") == 1
    status, _, err = run_cli(capsys, *train_argv(data, tiny_segment_config, run, "--epochs", "1", "--overwrite"))
    assert status == 0, err
    assert [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()] == ["epoch", "0"]
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 1
    assert not (run / "snapshots").exists() and (run / "notes.txt").read_text() == "mine"

    status, _, err = run_cli(capsys, "segment", "train", "--out", tmp_path / "empty", "--resume")
    assert status == 2 and "nothing to resume" in err and err.count("\n") == 1


def test_only_the_launching_process_checks_the_run_folder(uninterrupted, monkeypatch):
    from dlcv.errors import UserError
    from dlcv.training.runner import check_run_dir

    with pytest.raises(UserError, match="already holds a run"):
        check_run_dir(uninterrupted, resume=False, overwrite=False)
    for variable in ("LOCAL_RANK", "RANK", "NODE_RANK", "SLURM_PROCID"):
        with monkeypatch.context() as patch:
            patch.setenv(variable, "1")
            check_run_dir(uninterrupted, resume=False, overwrite=False)  # rank 0 already checked


def test_classification_resumes_exactly_after_a_crash_mid_epoch(tmp_path, capsys, monkeypatch):
    """Batch augmentation on the training device (a policy, mixup) replays too: EpochSeed reseeds it."""
    from dlcv.data.synthetic import make_classification_set
    from dlcv.training.classification import ClassificationTask

    data = make_classification_set(tmp_path / "data", classes=3, per_class=8, size=16, seed=2, val_per_class=2)
    config = tmp_path / "tiny.yaml"
    options = {"workers": 0, "device": "cpu", "model": "resnet20_cifar", "batch_size": 8, "epochs": 2, "lr": 0.05}
    config.write_text(yaml.safe_dump({**options, "policy": "trivialaugment", "mixup": 0.4}))
    argv = ["classify", "train", "--data", data, "--config", config]
    status, _, err = run_cli(capsys, *argv, "--out", tmp_path / "whole")
    assert status == 0, err

    class Crash(Exception):
        pass

    def crash(self, outputs, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == self.trainer.num_training_batches - 1:
            raise Crash

    with monkeypatch.context() as patch:
        patch.setattr(ClassificationTask, "on_train_batch_end", crash, raising=False)
        with pytest.raises(Crash):
            run_cli(capsys, *argv, "--out", tmp_path / "crashed")
    assert [row["epoch"] for row in history(tmp_path / "crashed" / "last.ckpt")] == [0]
    status, _, err = run_cli(capsys, "classify", "train", "--out", tmp_path / "crashed", "--resume")
    assert status == 0, err
    assert (tmp_path / "crashed" / "metrics.csv").read_bytes() == (tmp_path / "whole" / "metrics.csv").read_bytes()
    assert same_weights(tmp_path / "crashed" / "last.ckpt", tmp_path / "whole" / "last.ckpt")


def test_training_imports_everything_it_needs_before_it_starts():
    """A run imports its code once, at the start: a deferred import would load whatever the checkout holds
    an hour later, and a run whose checkout changed under it would fail after its last epoch. (test_reproduce's
    end-to-end test checks the whole of ``dlcv reproduce`` by running it; this covers the branches it skips.)"""
    modules = sorted(Path(dlcv.training.__file__).parent.glob("*.py"))
    deferred = [
        f"{module.name}:{node.lineno}"
        for module in modules
        for function in ast.walk(ast.parse(module.read_text()))
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert len(modules) > 5
    assert deferred == []
