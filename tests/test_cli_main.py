"""The `mlsim-live` entry point: no command, file-system errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsim_live.cli import main


def test_no_command_is_one_line_on_stderr(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mlsim-live: error: a command is required; expected one of ")
    for command in ("simulate", "reconstruct", "bench"):
        assert command in lines[0]


def test_help_still_goes_to_stdout(capsys: pytest.CaptureFixture) -> None:
    assert main(["-h"]) == 0
    captured = capsys.readouterr()
    assert "usage: mlsim-live" in captured.out and captured.err == ""


@pytest.mark.parametrize(
    ("out_name", "message"),
    [
        # mkdir under a file: an OSError from the file system
        ("taken/sub", "{out}: Not a directory; expected a writable path"),
        # an existing file as the folder: checked before anything is written
        ("taken", "--out {out} is a file; expected a folder"),
    ],
)
def test_unusable_out_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, out_name: str, message: str
) -> None:
    (tmp_path / "taken").write_text("not a folder")
    out = tmp_path / out_name
    code = main(["simulate", "--out", str(out), "--n", "1", "--size", "16"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err == [f"mlsim-live simulate: error: {message.format(out=out)}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_os_error_without_a_file_name(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlsim_live.cli.simulate as simulate

    def failing(args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(simulate, "run", failing)
    code = main(["simulate", "--out", "x"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err == [
        "mlsim-live simulate: error: [Errno 28] No space left on device; expected a writable path"
    ]
