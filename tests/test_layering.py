"""The models are plain modules: importing them pulls in no training, evaluation, world or serving code."""

import subprocess
import sys


def test_model_packages_import_no_training_or_evaluation_code():
    code = (
        "import sys, vavam.tokenizer, vavam.video, vavam.action\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('vavam.eval', 'vavam.train', 'vavam.world',"
        " 'vavam.quickstart', 'vavam.serve', 'lightning')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"model packages import {out}"


def test_constant_velocity_trajectory_is_one_function():
    from vavam.eval import openloop
    from vavam import types

    assert openloop.constant_velocity_trajectory is types.constant_velocity_trajectory
