"""The verbs beside training follow the same rules: `imgcls data check`, `imgcls calibrate` and cross-validation
take bad input in one line and a non-zero exit (the killed cross-validation that resumes at its fold is
tests/test_cross_validation.py::test_five_folds_end_to_end_with_a_kill_in_fold_3)."""

from __future__ import annotations

import pytest

from tests.helpers import cli, user_error


@pytest.mark.parametrize("args, says", [
    (["data", "check", "{tmp}/nope"], "dataset folder .*/nope does not exist; pass a folder of class subfolders"),
    (["data", "check", "{tmp}", "--run", "{tmp}/nope"], "does not exist"),
    (["calibrate", "{tmp}/nope"], "run .*/nope does not exist; pass a folder made by 'imgcls train'"),
    (["calibrate", "{tmp}"], "is not an imgcls run folder \\(no best.safetensors\\)"),
    (["train", "{classes}", "--folds", "1"], "--folds"),
])
def test_other_verbs_take_bad_input_in_one_line(tmp_path, class_folders, args, says):
    import re

    filled = [arg.format(tmp=tmp_path, classes=class_folders) for arg in args]
    line = user_error(cli(*filled))
    assert re.search(says, line), line
