"""The README's quick-start block, extracted from the README and run as written in a fresh copy of the repository
(its own `make setup`, demo, own-data search): every command succeeds and the demo's leaderboard scores every
method. Minutes of installing and searching: `make test-slow`."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.search.jobs import REPO


def quickstart_block() -> str:
    """The bash block between the README's ``<!-- quickstart -->`` markers."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"<!-- quickstart -->\s*```bash\n(.*?)```\s*<!-- /quickstart -->", text, re.S)
    assert found, "README.md has no quick-start block between <!-- quickstart --> markers"
    return found.group(1)


def test_the_block_is_commands_a_person_can_paste():
    block = quickstart_block()
    assert block.startswith("make setup && make demo") and "source .venv/bin/activate" in block
    assert "python examples/make_sales.py" in block  # own data made by a command, not assumed


@pytest.mark.slow
def test_the_readme_quickstart_runs_as_written_in_a_fresh_copy(tmp_path):
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    copy = tmp_path / "metaopt"
    for name in listed:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", quickstart_block()], cwd=copy, capture_output=True,
                          text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    board = subprocess.run([str(copy / ".venv/bin/metaopt"), "leaderboard", "sine-10shot"], cwd=copy,
                           capture_output=True, text=True, timeout=300).stdout
    for method in ("maml", "fomaml", "reptile", "scratch", "pretrain"):
        row = next(line for line in board.splitlines() if line.lstrip("│ ").startswith(f"{method} "))
        assert "±" in row, board  # scored on test tasks, whatever the timing of the pruner
    assert max(len(line) for line in board.splitlines()) <= 80
