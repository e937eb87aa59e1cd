"""Progress bars of a kernel reach the command line through the relay file."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from alignnb.core import progress


def test_a_child_process_bar_is_drawn_by_the_parent():
    stream = io.StringIO()
    code = ("from alignnb.core.progress import tqdm\n"
            "for _ in tqdm(range(4), desc='child bar', mininterval=0): pass\n")
    with progress.relayed(stream=stream) as path:
        assert os.environ[progress.RELAY_ENV] == path
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # inherits the variable
    drawn = stream.getvalue()
    assert "child bar" in drawn and "4/4" in drawn
    assert progress.RELAY_ENV not in os.environ and not os.path.exists(path)  # restored, cleaned up


def test_without_the_relay_a_bar_is_plain_tqdm(tmp_path):
    stream = io.StringIO()
    with progress.relayed(enabled=False, stream=stream) as path:
        bar = progress.tqdm(range(3), desc="local", file=io.StringIO())
        assert path is None and list(bar) == [0, 1, 2]
    assert stream.getvalue() == ""


def test_a_disabled_bar_relays_nothing():
    stream = io.StringIO()
    with progress.relayed(stream=stream) as path:
        for _ in progress.tqdm(range(3), desc="silent", disable=True):
            pass
        assert os.path.getsize(path) == 0
    assert "silent" not in stream.getvalue()


def test_a_renamed_and_reset_bar_restarts_on_the_command_line():
    """A queued bar that starts: the parent's copy takes the new name, and its clock restarts."""
    stream = io.StringIO()
    code = ("import time\nfrom alignnb.core.progress import tqdm\n"
            "bar = tqdm(total=2, desc='job (queued)', mininterval=0)\ntime.sleep(2.2)\n"
            "bar.set_description_str('job')\nbar.reset(2)\nbar.update(2)\nbar.close()\n")
    with progress.relayed(stream=stream):
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    final = stream.getvalue().replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("job") and "queued" not in final and "2/2" in final, final
    assert "[00:00<" in final, final  # not [00:02<...]: the clock restarted at the reset
