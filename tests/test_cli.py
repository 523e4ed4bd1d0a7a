"""The command line as a user meets it: the command list of ``biblioedge --help``."""

import subprocess
import sys

CLI = [sys.executable, "-m", "biblioedge"]


def test_help_lists_the_commands_and_hides_the_demo_child() -> None:
    out = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    listed = out.stdout.split("positional arguments:")[1].split("options:")[0]
    for command in ("agent", "central", "provision", "demo", "bench", "kiosk", "release"):
        assert f"\n    {command} " in listed, listed
    assert "SUPPRESS" not in out.stdout and "demo-fleet" not in out.stdout
    # the demo's own child still parses: it is hidden, not gone
    child = subprocess.run(
        [*CLI, "demo-fleet", "--help"], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0 and "--token-file" in child.stdout, child.stderr
