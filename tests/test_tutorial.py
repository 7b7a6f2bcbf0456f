"""docs/tutorial.md, run: every command and the Python block, in order, on small real data (Fashion-MNIST capped
per class, a 2-class folder of Fashion-MNIST shirts), so that the page stays true."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import Server, cli, make_shirt_folder

TUTORIAL = Path(__file__).parents[1] / "docs" / "tutorial.md"
DRAWN = {"cnn", "vit"}  # the runs whose report figures (filters, patches) the test looks for
SMALL = {"fashion-mnist": ["--max-per-class", "30", "--epochs", "1"], "shirts": ["--epochs", "1"]}  # per dataset


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", TUTORIAL.read_text(), flags=re.S)


def commands() -> list[str]:
    """The shell lines of the tutorial, in order (comments and continuation-free lines only)."""
    return [line.split(" #")[0].strip() for block in blocks("bash") for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_tutorial_has_commands_for_every_step():
    verbs = {shlex.split(line)[1] for line in commands() if line.startswith("imgcls ")}
    assert {"data", "summary", "train", "compare", "eval", "predict", "explain", "export",
            "serve"} <= verbs
    assert len(blocks("python")) == 1


@pytest.mark.slow
def test_every_command_of_the_tutorial_runs(tmp_path, lite0_weights):
    make_shirt_folder(tmp_path / "shirts", per_class=60)
    shutil.copy(lite0_weights, tmp_path / "lite0.pth")
    server = None
    try:
        for line in commands():
            words = shlex.split(line.rstrip("&").strip())
            if words[0] == "curl":
                assert server is not None, "curl before imgcls serve"
                words = [word.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}") for word in words]
                answer = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=60)
                assert answer.returncode == 0 and '"predictions"' in answer.stdout, answer.stdout + answer.stderr
                continue
            assert words[0] == "imgcls", line
            if words[1] == "serve":
                port = words.index("--port")
                server = _serve(tmp_path, words[2:port] + words[port + 2:])
                continue
            if words[1] == "train":
                words += SMALL[words[2]]
                if words[words.index("--name") + 1] not in DRAWN:
                    words.append("--no-report")  # suite time: the figures of these runs are not looked at here
            result = cli(*words[1:], cwd=tmp_path)
            assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"
        assert (tmp_path / "samples.png").is_file()
        assert (tmp_path / "runs" / "cnn" / "plots" / "filters.png").is_file()
        assert (tmp_path / "runs" / "vit" / "plots" / "patches.png").is_file()
        assert (tmp_path / "shirts-check" / "data_check.html").is_file()
        assert any((tmp_path / "explained").iterdir())
    finally:
        if server is not None:
            server.stop()


def _serve(cwd: Path, args: list[str]) -> Server:
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        return Server(Path(args[0]), *args[1:])
    finally:
        os.chdir(previous)


@pytest.mark.slow
def test_the_python_block_of_the_tutorial_runs(tmp_path, lite0_weights, capsys):
    make_shirt_folder(tmp_path / "shirts", per_class=60)
    shutil.copy(lite0_weights, tmp_path / "lite0.pth")
    code = blocks("python")[0].replace("epochs=20", "epochs=2")
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, str(TUTORIAL), "exec"), {})
    finally:
        os.chdir(previous)
    printed = capsys.readouterr().out.splitlines()  # the block's three prints, among what train prints
    first = next(index for index, line in enumerate(printed) if line.startswith("{'value': "))
    assert printed[first + 1] in ("shirt", "tshirt")
    assert 0.0 <= float(printed[-1]) <= 1.0
