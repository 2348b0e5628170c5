"""`make demo`'s job, in full: the real sms_spam lab through `ftlab run` (slow: ~4 min here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, requires_data

pytestmark = [pytest.mark.slow, requires_data]


def test_ftlab_run_sms_spam_prints_where_things_are(tmp_path):
    env = {**os.environ, "FTLAB_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster")}
    out = subprocess.run([f"{os.path.dirname(sys.executable)}/ftlab", "run", "sms_spam"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
             if ":" in line}
    release = Path(lines["adapter (champion release)"])
    assert (release / "model.safetensors").is_file()  # sms_spam trains every weight (peft.method full)
    assert "test_f1" in lines["metrics"]
    assert "127.0.0.1:3000" in out.stdout and "127.0.0.1:5000" in out.stdout
    assert (tmp_path / "dagster" / "dagster.yaml").is_file() and (tmp_path / "mlflow.db").is_file()
