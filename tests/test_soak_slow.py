"""The soak (slow; `make test-slow`): 300 tiny trials in-process and on Ray, every one recorded once, the driver flat."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.search.jobs import REPO


@pytest.mark.slow
def test_300_tiny_trials_end_once_each_and_the_driver_stays_flat(tmp_path):
    out = tmp_path / "soak.json"
    done = subprocess.run([sys.executable, "benchmarks/soak.py", "--trials", "300", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)
    for row in json.loads(out.read_text())["rows"]:
        assert row["optuna_finished"] == row["optuna_trials"] == 300
        assert row["mlflow_trial_runs"] == 300 and row["mlflow_runs_running"] == 0
        assert row["s_per_trial_last_50"] < 1.5 * row["s_per_trial_first_50"] + 0.1  # no growth over the run
        assert row["rss_at_end_mb"] < row["rss_after_first_50_mb"] + 200
        assert row["leaderboard_ok"] and row["leaderboard_s"] < 30 and row["ui_s"] < 60
