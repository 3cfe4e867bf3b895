"""The suite's own rules (conftest.py) hold: the crash-safety test cannot be skipped."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_a_skipped_crash_safety_test_fails_the_run(tmp_path: Path) -> None:
    # the suite's conftest.py and the modules it imports
    for name in ("conftest.py", "journal_backends.py", "mqtt_broker.py", "support.py"):
        shutil.copy(HERE / name, tmp_path / name)
    (tmp_path / "test_crash_safety.py").write_text(
        "import pytest\n\n"
        "def test_skips():\n    pytest.skip('daemon not integrated yet')\n\n"
        "@pytest.mark.skipif(True, reason='no reason')\ndef test_skipif():\n    pass\n\n"
        "@pytest.mark.xfail(reason='not yet')\ndef test_xfail():\n    assert False\n"
    )
    (tmp_path / "test_other.py").write_text(
        "import pytest\n\ndef test_skips():\n    pytest.skip('fine elsewhere')\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout
    # a skip in a test is a failure; a skip at setup (skipif) an error: both fail the run
    assert "2 failed, 1 skipped, 1 error" in done.stdout, done.stdout
    assert "may never be skipped" in done.stdout
