"""The README's two set-up commands are safe together.

`pip install . && nerve serve` runs a broker from the user's environment; `scripts/test` then
installs the test deps. They go into the tests' own venv, so the running broker's installed
package (its console's static files included) is never replaced under it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import CONSOLE_RE, REPO_ROOT, free_port

pytestmark = pytest.mark.slow  # two venvs filled from PyPI (or pip's cache): about a minute


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_installing_test_deps_leaves_a_running_broker_alone(tmp_path: Path) -> None:
    # A copy of the checkout, as a user's clone: the test venv is made inside it.
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv-test", "__pycache__", "*.egg-info", "nerve-data", ".hypothesis"))
    user_env = tmp_path / "user-env"
    subprocess.run([sys.executable, "-m", "venv", str(user_env)], check=True)
    user_py = user_env / "bin" / "python"
    subprocess.run([str(user_py), "-m", "pip", "install", "-q", str(src)], check=True,
                   env=dict(os.environ, PIP_ROOT_USER_ACTION="ignore"))

    console_port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        broker = subprocess.Popen(
            [str(user_env / "bin" / "nerve"), "serve", "--port", str(free_port()),
             "--console-port", str(console_port), "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not CONSOLE_RE.search(log_path.read_text(errors="replace")):
            assert broker.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        static = f"http://127.0.0.1:{console_port}/static/console.css"
        assert _status(static) == 200

        # The test command's install step, made from the user's interpreter as `PYTHON=...`.
        r = subprocess.run([str(src / "scripts" / "install-test-deps"), "python"],
                           env=dict(os.environ, PYTHON=str(user_py)),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr

        assert broker.poll() is None, log_path.read_text()
        assert _status(static) == 200
        assert _status(f"http://127.0.0.1:{console_port}/") == 200
        # The user's environment still has its own installed copy, not the checkout.
        where = subprocess.run([str(user_py), "-P", "-c", "import nerve; print(nerve.__file__)"],
                               cwd=tmp_path, capture_output=True, text=True, check=True)
        assert str(user_env) in where.stdout, where.stdout
        assert (src / ".venv-test" / "bin" / "python").exists()
    finally:
        broker.terminate()
        broker.wait(timeout=20)
