"""A run folder is never destroyed by a refusal, and is held by one process at a time."""

from mdnjax import checkpoint, cli


def _a_run_in_progress(path):
    """A folder as a run that is training (or finished) leaves it: its claim, config and task."""
    path.mkdir()
    files = {checkpoint.RUN: b'{"task": {"builtin": "beta"}}', checkpoint.CONFIG: b"{}", checkpoint.TASK: b"{}"}
    for name, data in files.items():
        (path / name).write_bytes(data)
    return files


def test_a_refused_out_leaves_the_other_runs_files_as_they_were(tmp_path, capsys):
    out = tmp_path / "taken"
    files = _a_run_in_progress(out)
    assert cli.main(["--samples", "20000", "--epochs", "1", "--no-plots", "--out", str(out)]) == 2
    assert "already used by another run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_a_run_held_by_another_process_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "busy"
    files = _a_run_in_progress(out)
    held = checkpoint.lock_run_dir(out)  # as a process training there holds it
    try:
        assert cli.main(["--resume", str(out), "--epochs", "10"]) == 2
        assert "in use by another process" in capsys.readouterr().err
    finally:
        checkpoint.unlock_run_dir(held)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != checkpoint.LOCK} == files
