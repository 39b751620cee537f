"""Bad inputs, part 2 (issue 16): the four command lines, read-only folders, full disks, paths that are files or
folders, and output-folder locks (test_bad_inputs_data.py holds part 3: dataset WAVs, the feature cache,
channels-last arrays, portrait files, non-finite weights and --resume-from).

Every case asserts the problem AND the fix in the message, the exit code for a CLI (one ``error:`` line, no
traceback), and that nothing partial is left. Read-only folders and full disks are real where this process can
mount a tmpfs (root in a container); elsewhere the writes into that folder are made to fail with the same errno
(EROFS / ENOSPC), so the same code paths run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from singer_core.audio.encoders import MEL_ENCODER_NAME
from tests.cli_run import run_cli
from tests.toy_models import ToyTask, save_tiny_motion_model

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------
# helpers: in-process CLI runs, read-only / full folders, a tiny motion checkpoint


def _one_error(err: str, *fragments: str) -> str:
    """The CLI's stderr holds an `error:` line with every fragment, and no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert len(lines) == 1, err
    if os.environ.get("SINGER_BAD_INPUT_MESSAGES"):  # the issue note's table: run with -s to print them
        print(f"\n{lines[0]}")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _files(folder: Path) -> list[str]:
    """Every file and folder left under `folder` (relative, sorted), hidden ones included."""
    if not folder.exists():
        return []
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def _mount_tmpfs(target: Path, options: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def broken_folder(tmp_path, monkeypatch, request):
    """broken_folder(kind) -> a folder where writes fail: kind "read-only" (EROFS) or "full" (ENOSPC).

    A real tmpfs (read-only, or 64 KiB and filled up) where this process may mount one; otherwise writes under
    that folder are refused with the same errno by wrapping os.open / os.mkdir (non-root: chmod for read-only).
    """
    mounted = []

    def make(kind: str) -> Path:
        target = tmp_path / f"mnt-{kind}"
        options = "ro,size=64k" if kind == "read-only" else "size=64k"
        if _mount_tmpfs(target, options):
            mounted.append(target)
            if kind == "full":
                with contextlib.suppress(OSError), open(target / "filler", "wb") as handle:
                    while True:
                        handle.write(b"\0" * 4096)
                        handle.flush()
            return target
        code = errno.EROFS if kind == "read-only" else errno.ENOSPC
        if kind == "read-only" and os.geteuid() != 0:
            target.chmod(0o555)
            request.addfinalizer(lambda: target.chmod(0o755))
            return target
        real_open, real_mkdir = os.open, os.mkdir

        def inside(path) -> bool:
            with contextlib.suppress(TypeError, ValueError):
                return Path(os.fsdecode(path)).absolute().is_relative_to(target)
            return False

        def failing_open(path, flags, *args, **kwargs):
            if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise OSError(code, os.strerror(code), os.fsdecode(path))
            return real_open(path, flags, *args, **kwargs)

        def failing_mkdir(path, *args, **kwargs):
            if inside(path):
                raise OSError(code, os.strerror(code), os.fsdecode(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", failing_open)
        monkeypatch.setattr(os, "mkdir", failing_mkdir)
        return target

    yield make
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _require_real_mount(folder: Path) -> None:
    """Skip unless `folder` is a real tmpfs: code writing through builtins.open / FFmpeg bypasses the fallback."""
    if not any(line.split()[1] == str(folder) for line in Path("/proc/mounts").read_text().splitlines()):
        pytest.skip("needs a real tmpfs (root in a container) to fill up or mount read-only")


def _train_main():
    from singer_core.train.__main__ import main

    return main


# ---------------------------------------------------------------------------------------------------------
# train: usage and config errors (all before anything is built or written)


@pytest.mark.parametrize("argv,code,what,fix", [
    (["--set", "lr=fast"], 1, "config field lr must be a number, got 'fast'", "--set lr=VALUE"),
    (["--set", "lr"], 2, "--set expects FIELD=VALUE", "--set lr=0.001"),
    (["--set", "learning_rate=0.1"], 1, "unknown MotionTrainConfig fields ['learning_rate']", "known fields"),
    (["--set", "steps=1.5"], 1, "config field steps must be an integer, got 1.5", "--set steps=VALUE"),
    (["--log-level", "verbose"], 2, "invalid choice: 'VERBOSE'", "DEBUG"),
    (["--resume-from", "0"], 2, "--resume-from must be a checkpoint step >= 1", "got 0"),
    (["--max-steps", "-3"], 2, "--max-steps must be >= 0", "got -3"),
], ids=["set-lr-fast", "set-no-value", "set-unknown-field", "set-steps-float", "log-level-verbose",
        "resume-from-zero", "max-steps-negative"])
def test_train_usage_errors(tmp_path, argv, code, what, fix):
    out = tmp_path / "run"
    got, _, err = run_cli(_train_main(), ["motion", "--out", str(out), *argv])
    assert got == code
    _one_error(err, what, fix)
    assert _files(out) == []  # nothing written, not even the folder's config.json


@pytest.mark.parametrize("content,what,fix", [
    ('{"betas": 0.9}', "config field betas must be a list of 2 values, got 0.9", "fix it in --config"),
    ('{"lr": 0.001,', "is not valid JSON", 'fix it, e.g. {"lr": 0.0001'),
    ('[0.001]', "holds a JSON list, not an object of fields", 'write e.g. {"lr"'),
    (None, "does not exist", "give the path of a JSON file"),
], ids=["config-wrong-type", "config-invalid-json", "config-a-list", "config-missing"])
def test_train_config_file_errors(tmp_path, content, what, fix):
    config = tmp_path / "config.json"
    if content is not None:
        config.write_text(content)
    out = tmp_path / "run"
    code, _, err = run_cli(_train_main(), ["motion", "--config", str(config), "--out", str(out)])
    assert code in (1, 2)
    _one_error(err, what, fix)
    assert _files(out) == []


def test_train_cli_in_a_subprocess_prints_one_line_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "singer_core.train", "motion", "--set", "lr=fast", "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1
    _one_error(done.stderr, "lr must be a number", "--set lr=VALUE")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kind,what", [("read-only", "the folder is read-only"), ("full", "the disk is full")])
def test_train_out_unwritable(broken_folder, kind, what):
    out = broken_folder(kind) / "run"
    code, _, err = run_cli(_train_main(), ["motion", "--out", str(out), "--max-steps", "1"])
    assert code == 1
    line = _one_error(err, what, str(out))
    assert "choose a writable folder" in line or "free some space" in line
    assert not out.exists() or _files(out) == []


def test_train_out_is_a_file(tmp_path):
    out = tmp_path / "run"
    out.write_text("not a folder")
    code, _, err = run_cli(_train_main(), ["motion", "--out", str(out)])
    assert code == 1
    _one_error(err, "is a file, not a folder", "choose another output folder")
    assert out.read_text() == "not a folder"


def test_train_data_that_is_not_a_dataset(tmp_path):
    (tmp_path / "songs").mkdir()
    out = tmp_path / "run"
    code, _, err = run_cli(_train_main(), ["motion", "--data", str(tmp_path / "songs"), "--out", str(out),
                                            "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert code == 1
    _one_error(err, "is not a SINGER dataset: no index.json", "python -m singer_core.data synth --out DIR")
    assert not (out / "checkpoints").exists() and not (out / ".singer.lock").exists()


def test_eval_checkpoint_that_is_not_a_folder(tmp_path):
    from singer_core.eval.__main__ import main

    code, _, err = run_cli(main, ["motion", "--checkpoint", str(tmp_path / "nothing"), "--data", str(tmp_path),
                                   "--quiet"])
    assert code == 1
    _one_error(err, "is not a folder", "give the folder written by save_pretrained or by the trainer")


# ---------------------------------------------------------------------------------------------------------
# output-folder locks


def _hold_lock(folder: Path) -> subprocess.Popen:
    """A separate process holding folder's lock until killed (returns once it holds it)."""
    code = ("import sys, time\nfrom singer_core.io.lock import folder_lock\n"
            f"with folder_lock({str(folder)!r}, 'holder'):\n    print('locked', flush=True)\n    time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout.readline().strip() == "locked"
    return process


@pytest.fixture
def held(tmp_path):
    processes = []

    def hold(folder: Path) -> subprocess.Popen:
        processes.append(_hold_lock(folder))
        return processes[-1]

    yield hold
    for process in processes:
        process.kill()
        process.wait()


def test_lock_refuses_a_second_job_with_the_first_ones_pid(tmp_path, held):
    from singer_core.io.lock import FolderLockedError, folder_lock, lock_holder

    folder = tmp_path / "out"
    first = held(folder)
    with pytest.raises(FolderLockedError) as caught, folder_lock(folder, "train"):
        pass
    message = str(caught.value)
    assert f"PID {first.pid}" in message and "in use by another job" in message
    assert f"kill {first.pid}" in message and "choose another output folder" in message
    assert lock_holder(folder)["pid"] == first.pid


def test_stale_lock_of_a_killed_job_is_taken_over(tmp_path, caplog):
    from singer_core.io.lock import LOCK_NAME, folder_lock, lock_holder

    folder = tmp_path / "out"
    process = _hold_lock(folder)
    process.kill()
    process.wait()
    assert (folder / LOCK_NAME).is_file() and lock_holder(folder) is None  # left behind, holder gone
    with caplog.at_level(logging.WARNING), folder_lock(folder, "train"):
        assert lock_holder(folder)["pid"] == os.getpid()
    assert f"taking over the stale lock of PID {process.pid}" in caplog.text
    assert not (folder / LOCK_NAME).exists()  # released


def test_two_trainings_on_one_out_second_refused(tmp_path, held):
    """The silent wrong result of the issue: two runs on one --out both exited 0 with mixed files."""
    out = tmp_path / "run"
    first = held(out)
    code, _, err = run_cli(_train_main(), ["motion", "--out", str(out), "--max-steps", "1"])
    assert code == 1
    _one_error(err, f"PID {first.pid}", "wait for it to finish")
    assert not (out / "config.json").exists()


def test_synth_into_a_locked_folder(tmp_path, held):
    from singer_core.data.__main__ import main

    out = tmp_path / "data"
    first = held(out)
    code, _, err = run_cli(main, ["synth", "--out", str(out), "--clips", "1", "--quiet"])
    assert code == 1
    _one_error(err, f"PID {first.pid}", "choose another output folder")
    assert _files(out) == [".singer.lock"]  # only the holder's lock


def test_demo_into_a_locked_folder(tmp_path, held):
    from singer_core.demo import main

    out = tmp_path / "demo"
    first = held(out)
    code, _, err = run_cli(main, ["--out", str(out)])
    assert code == 1
    _one_error(err, f"PID {first.pid}", "wait for it to finish")
    assert _files(out) == [".singer.lock"]


def test_library_train_refuses_a_locked_run_folder(tmp_path, held):
    from singer_core.io.lock import FolderLockedError
    from singer_core.train.loop import train

    out = tmp_path / "run"
    held(out)
    with pytest.raises(FolderLockedError, match="in use by another job"):
        train(ToyTask, out=out, device="cpu", cache_dir=tmp_path, quiet=True)
    assert _files(out) == [".singer.lock"]


# ---------------------------------------------------------------------------------------------------------
# demo / data / preprocess / eval command lines


@pytest.mark.parametrize("argv,what", [
    (["--seconds", "0"], "--seconds must be between 1 and 600"),
    (["--levels", "0"], "--levels must be between 1 and 8"),
    (["--sample-steps", "0"], "--sample-steps must be >= 1"),
], ids=["seconds-0", "levels-0", "sample-steps-0"])
def test_demo_bad_arguments_write_nothing(tmp_path, argv, what):
    from singer_core.demo import main

    out = tmp_path / "demo"
    code, _, err = run_cli(main, ["--out", str(out), *argv])
    assert code == 2
    _one_error(err, what, "e.g." if "sample" not in what else "got 0")
    assert not out.exists()  # checked before the first of the demo's files


def test_demo_out_is_a_file(tmp_path):
    from singer_core.demo import main

    out = tmp_path / "demo"
    out.write_text("x")
    code, _, err = run_cli(main, ["--out", str(out), "--seconds", "1"])
    assert code == 1
    _one_error(err, "is a file, not a folder", "choose another output folder")


@pytest.mark.parametrize("kind,what", [("read-only", "read-only"), ("full", "the disk is full"),
                                       ("file", "is a file, not a folder")])
def test_synth_out_unwritable(tmp_path, broken_folder, kind, what):
    from singer_core.data.__main__ import main

    if kind == "file":
        out = tmp_path / "data"
        out.write_text("x")
    else:
        out = broken_folder(kind) / "data"
    code, _, err = run_cli(main, ["synth", "--out", str(out), "--clips", "1", "--quiet"])
    assert code == 1
    _one_error(err, what, str(out))
    if kind != "file":
        assert _files(out) == []


def test_preprocess_given_an_audio_file(tmp_path):
    from singer_core.audio.io import write_wav
    from singer_core.data.__main__ import main

    song = write_wav(tmp_path / "song.wav", torch.zeros(1, 1600), 16000)
    out = tmp_path / "data"
    code, _, err = run_cli(main, ["preprocess", "--videos", str(song), "--out", str(out), "--quiet"])
    assert code == 1
    _one_error(err, "is an audio file", "give such a video or a folder of them")
    assert _files(out) == []


def test_preprocess_bad_config_file(tmp_path):
    from singer_core.data.__main__ import main

    (tmp_path / "videos").mkdir()
    config = tmp_path / "pre.json"
    config.write_text("{size: 3}")
    code, _, err = run_cli(main, ["preprocess", "--videos", str(tmp_path / "videos"), "--out",
                                   str(tmp_path / "data"), "--config", str(config)])
    assert code == 2
    _one_error(err, "is not valid JSON", '{"size": 256')


@pytest.mark.parametrize("kind", ["read-only", "directory"])
def test_eval_json_target_checked_before_the_evaluation(tmp_path, broken_folder, kind):
    from singer_core.eval.__main__ import main

    target = broken_folder("read-only") / "result.json" if kind == "read-only" else tmp_path
    # the checkpoint and data do not exist: the --json check must come first, before any loading
    code, _, err = run_cli(main, ["motion", "--checkpoint", str(tmp_path / "none"), "--data",
                                   str(tmp_path / "none"), "--json", str(target), "--quiet"])
    assert code == 1
    if kind == "read-only":
        _one_error(err, "read-only", "choose a writable folder")
    else:
        _one_error(err, "is a folder, not a file", "give a file name such as")
    assert str(tmp_path / "none") not in err  # failed on --json, before reading the checkpoint


def test_eval_json_write_failing_at_the_end_keeps_the_result(tmp_path, monkeypatch):
    """The final write fails (disk full after the check): the JSON still goes to stdout, exit 1."""
    from singer_core.data.synthetic import SynthSingerConfig, generate_dataset
    from singer_core.eval.__main__ import main
    from singer_core.io import checkpoint

    data = tmp_path / "data"
    generate_dataset(data, SynthSingerConfig(clips=2, size=64, seconds=2.0, test_fraction=0.5, seed=0))
    model = save_tiny_motion_model(tmp_path / "model")

    def full(path, data, *, who="save"):
        raise checkpoint.fs_error(OSError(errno.ENOSPC, "No space left on device"), path, who=who)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", full)
    target = tmp_path / "result.json"
    code, out, err = run_cli(main, ["motion", "--checkpoint", str(model), "--data", str(data), "--steps", "2",
                                     "--json", str(target), "--quiet", "--max-offset", "1"])
    assert code == 1
    _one_error(err, "the disk is full", "free some space")
    assert json.loads(out[out.index("{"):])["clips"] == 1  # the computation is not lost
    assert not target.exists()


# ---------------------------------------------------------------------------------------------------------
# library writes: read-only folders and full disks named, cleanup never masking, nothing partial


def test_save_pretrained_on_a_full_disk(broken_folder):
    from singer_core.io.fs import FileSystemError

    folder = broken_folder("full") / "model"
    with pytest.raises(FileSystemError) as caught:
        save_tiny_motion_model(folder)
    assert "the disk is full" in str(caught.value) and "free some space" in str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert [name for name in _files(folder.parent) if name != "filler"] == []


def test_features_save_on_a_full_disk(broken_folder):
    from singer_core.audio.features import SingerAudioFeatures
    from singer_core.io.fs import FileSystemError

    folder = broken_folder("full")
    features = SingerAudioFeatures(torch.randn(200, 16, 80), fps=25.0, encoder=MEL_ENCODER_NAME, sample_rate=16000,
                                   num_samples=128000, rows="steps")
    with pytest.raises(FileSystemError, match="the disk is full.*free some space"):
        features.save(folder / "song.safetensors")
    assert [name for name in _files(folder) if name != "filler"] == []


@pytest.mark.parametrize("kind,what", [("read-only", "the folder is read-only"), ("full", "the disk is full")])
def test_write_audio_names_the_file_system_not_the_codec(broken_folder, kind, what):
    from singer_core.audio.encode import write_audio
    from singer_core.io.fs import FileSystemError

    folder = broken_folder(kind)
    _require_real_mount(folder)
    with pytest.raises(FileSystemError) as caught:
        write_audio(folder / "song.flac", torch.rand(2, 48000 * 4) - 0.5, 48000)
    assert what in str(caught.value) and "try another codec" not in str(caught.value)
    assert [name for name in _files(folder) if name != "filler"] == []


def test_write_wav_on_a_full_disk_leaves_no_partial_file(broken_folder):
    from singer_core.audio.io import write_wav
    from singer_core.io.fs import FileSystemError

    folder = broken_folder("full")
    _require_real_mount(folder)
    with pytest.raises(FileSystemError, match="the disk is full"):
        write_wav(folder / "song.wav", torch.zeros(1, 160000), 16000)
    assert [name for name in _files(folder) if name != "filler"] == []


def test_atomic_write_onto_a_folder(tmp_path):
    from singer_core.io.checkpoint import atomic_write_bytes
    from singer_core.io.fs import FileSystemError

    (tmp_path / "result.json").mkdir()
    with pytest.raises(FileSystemError, match="it is a folder, not a file; give a file name"):
        atomic_write_bytes(tmp_path / "result.json", b"{}")
    assert _files(tmp_path) == ["result.json"]


def test_cleanup_never_masks_the_original_error(tmp_path, monkeypatch):
    """write_audio stopped mid-file while removing its temporary file fails (EROFS): the caller still gets the
    error that stopped it, not the cleanup's."""
    import pathlib

    from singer_core.audio.encode import write_audio

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop("stopped by the caller")

    def refuse(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(pathlib.Path, "unlink", refuse)
    with pytest.raises(Stop, match="stopped by the caller"):
        write_audio(tmp_path / "a.flac", torch.zeros(1, 100000), 16000, progress=stop)
    monkeypatch.undo()
    assert not (tmp_path / "a.flac").exists()
