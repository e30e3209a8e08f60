"""The checkpoint commit under damage: every way a payload can go bad falls back to the previous one.

Each test saves two checkpoints (frames 100 and 200), damages the run dir one way, and checks what
``load_checkpoint`` does: the newest that verifies is loaded and the skipped one is named, or, when
none verifies, one :class:`CheckpointError` names every file and what is wrong with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from rlplastic.checkpoint import POINTER_NAME, load_checkpoint, save_checkpoint
from rlplastic.errors import CheckpointError
from rlplastic.runlock import RunDirLock

ROOT = Path(__file__).resolve().parents[1]


def _state(frame: int, replay_size: int = 4096) -> dict:
    g = torch.Generator().manual_seed(frame)
    return {"frame": frame, "weights": torch.randn(64, generator=g),
            "replay": {"frames": torch.randint(0, 256, (replay_size,), generator=g, dtype=torch.uint8)}}  # fmt: skip


def _two_checkpoints(run_dir):
    save_checkpoint(run_dir, _state(100), frame=100)
    save_checkpoint(run_dir, _state(200), frame=200)
    pointer = json.loads((run_dir / POINTER_NAME).read_text())
    return run_dir / pointer["current"]["file"], run_dir / pointer["previous"]["file"]


def _assert_loaded(loaded, frame):
    assert loaded.record.frame == frame
    assert torch.equal(loaded.state["weights"], _state(frame)["weights"])


def _flip(path, offset, count=64):
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _replay_offset(path) -> int:
    """Byte offset of the largest tensor record (the replay frames) inside a torch.save zip."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def test_two_payloads_are_kept_and_older_ones_deleted(tmp_path):
    for frame in (100, 200, 300, 400):
        save_checkpoint(tmp_path, _state(frame), frame=frame)
    pointer = json.loads((tmp_path / POINTER_NAME).read_text())
    assert (pointer["current"]["frame"], pointer["previous"]["frame"]) == (400, 300)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pt")) == sorted(
        [pointer["current"]["file"], pointer["previous"]["file"]]
    )
    _assert_loaded(load_checkpoint(tmp_path), 400)


@pytest.mark.parametrize("damage", ["truncated", "same_size_flip", "replay_flip", "zero_bytes", "deleted"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    newest, _ = _two_checkpoints(tmp_path)
    size = newest.stat().st_size
    if damage == "truncated":
        os.truncate(newest, size // 2)
    elif damage == "same_size_flip":
        _flip(newest, size // 2)
    elif damage == "replay_flip":
        _flip(newest, _replay_offset(newest), count=16)
    elif damage == "zero_bytes":
        newest.write_bytes(b"")
    else:
        newest.unlink()
    assert newest.exists() == (damage != "deleted")
    if damage in ("same_size_flip", "replay_flip"):
        assert newest.stat().st_size == size
    loaded = load_checkpoint(tmp_path)
    _assert_loaded(loaded, 100)
    (note,) = loaded.notes
    assert newest.name in note and "frame 200" in note


def test_no_valid_checkpoint_is_one_error_naming_every_file(tmp_path):
    newest, previous = _two_checkpoints(tmp_path)
    _flip(newest, 100)
    previous.unlink()
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path)
    message = str(caught.value)
    assert newest.name in message and "checksum" in message
    assert previous.name in message and "missing" in message
    assert "to start the run over" in message and "\n" not in message


def test_an_unreadable_pointer_is_one_error(tmp_path):
    _two_checkpoints(tmp_path)
    (tmp_path / POINTER_NAME).write_bytes(b"\x00{not json")
    with pytest.raises(CheckpointError, match=r"checkpoint\.json cannot be read"):
        load_checkpoint(tmp_path)


def test_a_pointer_that_vouches_for_other_bytes_is_refused(tmp_path):
    _two_checkpoints(tmp_path)
    pointer = json.loads((tmp_path / POINTER_NAME).read_text())
    pointer["current"]["sha256"] = "0" * 64
    (tmp_path / POINTER_NAME).write_text(json.dumps(pointer))
    _assert_loaded(load_checkpoint(tmp_path), 100)


def test_stale_temporary_files_are_ignored_then_removed(tmp_path):
    _two_checkpoints(tmp_path)
    (tmp_path / "checkpoint-000009-frame900.pt.tmp").write_bytes(b"half a payload")
    (tmp_path / "checkpoint-000009-frame900.pt").write_bytes(b"an uncommitted payload")
    (tmp_path / (POINTER_NAME + ".tmp")).write_text('{"frame": 900}')
    _assert_loaded(load_checkpoint(tmp_path), 200)
    save_checkpoint(tmp_path, _state(300), frame=300)
    assert not list(tmp_path.glob("*.tmp"))
    assert len(list(tmp_path.glob("checkpoint-*.pt"))) == 2


def test_payloads_without_a_pointer_are_an_unfinished_first_save(tmp_path):
    save_checkpoint(tmp_path, _state(100), frame=100)
    (tmp_path / POINTER_NAME).unlink()  # as if killed between the first payload's rename and its pointer
    assert load_checkpoint(tmp_path) is None


@pytest.mark.parametrize("point", ["payload_write", "payload_fsync", "payload_rename", "pointer_write",
                                   "pointer_rename", "committed"])  # fmt: skip
def test_a_fault_inside_the_commit_leaves_a_loadable_checkpoint(tmp_path, monkeypatch, point):
    _two_checkpoints(tmp_path)
    monkeypatch.setenv("RLPLASTIC_FAULT", f"{point}:raise")
    import rlplastic.faults

    monkeypatch.setattr(rlplastic.faults, "_arrivals", {})
    with pytest.raises(RuntimeError, match=f"injected fault at {point}"):
        save_checkpoint(tmp_path, _state(300), frame=300)
    monkeypatch.delenv("RLPLASTIC_FAULT")
    loaded = load_checkpoint(tmp_path)
    # before the pointer's rename the old checkpoint stands; the pointer's rename is the commit
    assert loaded.record.frame == (300 if point == "committed" else 200) and loaded.notes == []
    pointer = json.loads((tmp_path / POINTER_NAME).read_text())
    assert pointer["previous"]["frame"] == (200 if point == "committed" else 100)  # the fallback is still there
    save_checkpoint(tmp_path, _state(300), frame=300)
    _assert_loaded(load_checkpoint(tmp_path), 300)


def test_disk_full_while_writing_says_so_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    _two_checkpoints(tmp_path)
    import rlplastic.faults

    monkeypatch.setattr(rlplastic.faults, "_arrivals", {})
    monkeypatch.setenv("RLPLASTIC_FAULT", "payload_fsync:enospc")
    with pytest.raises(CheckpointError) as caught:
        save_checkpoint(tmp_path, _state(300), frame=300)
    message = str(caught.value)
    assert "no space left" in message and "frame 200) is intact" in message and "MiB free" in message
    monkeypatch.delenv("RLPLASTIC_FAULT")
    _assert_loaded(load_checkpoint(tmp_path), 200)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_real_full_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        save_checkpoint(mount, _state(100, replay_size=300_000), frame=100)
        with pytest.raises(CheckpointError, match=r"no space left.*frame 100\) is intact"):
            save_checkpoint(mount, _state(200, replay_size=900_000), frame=200)
        _assert_loaded(load_checkpoint(mount), 100)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_the_run_dir_lock_names_its_holder_and_dies_with_it(tmp_path):
    with RunDirLock(tmp_path), pytest.raises(Exception, match=rf"in use by process {os.getpid()}"):
        RunDirLock(tmp_path).__enter__()
    # a holder killed with SIGKILL releases the lock at once
    code = (f"import sys, time; from rlplastic.runlock import RunDirLock; RunDirLock({str(tmp_path)!r}).__enter__(); "
            "print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    try:
        assert child.stdout.readline().strip() == "held"  # the child holds the lock now
        with pytest.raises(Exception, match=rf"in use by process {child.pid}"):
            RunDirLock(tmp_path).__enter__()
    finally:
        child.kill()
        child.wait()
    with RunDirLock(tmp_path):
        pass


def test_fault_spec_is_checked():
    from rlplastic.faults import _parse

    assert _parse("payload_write@3:kill,committed:raise") == {"payload_write": (3, "kill"), "committed": (1, "raise")}
    with pytest.raises(ValueError, match="expected <point>"):
        _parse("payload_write:explode")
