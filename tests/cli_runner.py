"""Run the installed `nda` entry point as a user would (a subprocess), for CLI tests."""

import shutil
import subprocess
import sys
from pathlib import Path

_BESIDE = Path(sys.executable).with_name("nda")
NDA = str(_BESIDE) if _BESIDE.exists() else shutil.which("nda")


def run_nda(*args, check=True, timeout=600):
    assert NDA, "the `nda` entry point is not installed (pip install -e .)"
    proc = subprocess.run([NDA, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"nda {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
