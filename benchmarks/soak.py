"""A soak: one search of many tiny trials, in-process and on a local Ray, with MLflow tracking on sqlite.

Checks that exactly ``--trials`` trials end in Optuna and as many trial runs in MLflow, and
measures whether the driver stays flat: the mean seconds per trial (the driver's wall time
between two finished trials, times the trials running at once) over the first and the last
50 trials, the driver's resident memory after the first 50 and at the end, and its peak.
Afterwards it times ``metaopt leaderboard`` and ``metaopt ui`` (until the UI answers) on the
same store. Prints a table and writes ``benchmarks/results/soak.json``.

    python benchmarks/soak.py [--trials 300] [--executors in-process ray]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WINDOW = 50


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _job(directory: Path, trials: int) -> Path:
    job = {
        "name": "soak", "family": {"name": "sine", "shots": 5, "queries": 5}, "methods": ["maml", "fomaml"],
        "space": {m: {"inner_lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True}, "outer_lr": 0.001,
                      "inner_steps": 1, "meta_batch": 4} for m in ("maml", "fomaml")},
        "budget": {"trials": trials, "meta_iterations": 5, "eval_interval": 5, "val_tasks": 10, "test_tasks": 100},
        "pruner": {"type": "none"}, "backbone": {"name": "mlp", "hidden": [8]}, "compile": "never",
        "resources": {"cpus_per_trial": 1, "max_concurrent": 2}, "seed": 0,
    }
    path = directory / "soak.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def soak(executor_name: str, trials: int, work: Path) -> dict:
    """Run the search; count trials and runs; time the driver; time leaderboard and ui on the store."""
    import optuna
    from mlflow.tracking import MlflowClient

    from metaopt.search import load_job
    from metaopt.search.executors import InProcessExecutor, RayExecutor
    from metaopt.search.runner import run_search
    from metaopt.search.storage import journal_storage
    from metaopt.tracking import MlflowSearchTracker

    uri = f"sqlite:///{work / 'mlflow.db'}"
    loaded = load_job(_job(work, trials))
    finished: list[float] = []
    rss: dict[str, float] = {}

    def progress(event: str, info: dict) -> None:
        if event == "trial":
            finished.append(time.perf_counter())
            if len(finished) % WINDOW == 0:
                rss.setdefault("every_50_mb", []).append(round(_rss_mb(), 1))
            if len(finished) == WINDOW:
                rss["after_first_50_mb"] = _rss_mb()

    executor = InProcessExecutor() if executor_name == "in-process" else RayExecutor(num_cpus=2, cpus_per_trial=1)
    start = time.perf_counter()
    with executor:
        summary = run_search(loaded, executor=executor, tracker=MlflowSearchTracker(uri), workdir=work / "w",
                             progress=progress)
        slots = executor.slots
    wall = time.perf_counter() - start
    rss["at_end_mb"] = _rss_mb()
    storage = journal_storage(work / "w" / "optuna.journal")
    study = optuna.load_study(study_name=summary.search_id, storage=storage)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"metaopt-{summary.key}")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], "tags.`metaopt.role` = 'trial'", max_results=1000,
                                  page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    gaps = [b - a for a, b in zip([start, *finished], finished)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "metaopt.cli"]
    t0 = time.perf_counter()
    board = subprocess.run([*command, "leaderboard", summary.key, "--tracking-uri", uri], capture_output=True,
                           text=True, env=env, timeout=300)
    leaderboard_s = time.perf_counter() - t0
    ui_s = _ui_seconds(command, uri, env, experiment.experiment_id)
    return {
        "executor": executor_name, "trials": trials, "slots": slots, "wall_s": wall,
        "optuna_finished": sum(t.state.is_finished() for t in study.trials), "optuna_trials": len(study.trials),
        "mlflow_trial_runs": len(runs), "mlflow_runs_running": sum(r.info.status == "RUNNING" for r in runs),
        "s_per_trial_first_50": sum(gaps[:WINDOW]) / WINDOW * slots,
        "s_per_trial_last_50": sum(gaps[-WINDOW:]) / WINDOW * slots,
        "rss_after_first_50_mb": rss.get("after_first_50_mb"), "rss_at_end_mb": rss["at_end_mb"],
        "rss_every_50_mb": rss.get("every_50_mb", []),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "leaderboard_s": leaderboard_s, "leaderboard_ok": board.returncode == 0, "ui_s": ui_s,
    }


def _ui_seconds(command: list[str], uri: str, env: dict, experiment_id: str) -> float:
    """Seconds from ``metaopt ui`` to an answer of the runs search the UI's experiment page makes."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen([*command, "ui", "--port", str(port), "--tracking-uri", uri], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/runs/search",
                                         data=json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode(),
                                         headers={"Content-Type": "application/json"})
        while time.perf_counter() - start < 120:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    json.loads(response.read())
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.3)
        return float("inf")
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--executors", nargs="+", default=["in-process", "ray"], choices=["in-process", "ray"])
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "soak.json"))
    args = parser.parse_args()
    rows = []
    for name in args.executors:  # each in its own process, so the peak RSS is that search's alone
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            subprocess.run([sys.executable, __file__, "--one", name, str(args.trials), tmp, str(out)], check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
            rows.append(json.loads(out.read_text()))
    print(f"\nsoak: {args.trials} tiny trials (sine, MLP, 5 meta-iterations), MLflow on sqlite")
    header = ["executor", "Optuna trials finished", "MLflow trial runs", "s/trial first 50", "s/trial last 50",
              "RSS after 50 MB", "RSS at end MB", "peak RSS MB", "leaderboard s", "ui s", "wall s"]
    print(" | ".join(header))
    for r in rows:
        print(" | ".join([r["executor"], f"{r['optuna_finished']}/{r['optuna_trials']}", str(r["mlflow_trial_runs"]),
                          f"{r['s_per_trial_first_50']:.3f}", f"{r['s_per_trial_last_50']:.3f}",
                          f"{r['rss_after_first_50_mb']:.0f}", f"{r['rss_at_end_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
                          f"{r['leaderboard_s']:.1f}", f"{r['ui_s']:.1f}", f"{r['wall_s']:.0f}"]))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"benchmark": "soak", "trials": args.trials, "rows": rows}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--one":
        import torch

        torch.set_num_threads(1)
        row = soak(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        Path(sys.argv[5]).write_text(json.dumps(row))
    else:
        main()
