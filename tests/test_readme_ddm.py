"""The README's declarative-management example runs, as written, against a fresh instance."""
from __future__ import annotations

import json
import re
from pathlib import Path

from tests.test_mdm_api_cli import _cli

README = Path(__file__).resolve().parent.parent / "README.md"


def example_lines() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- ddm-example -->\n```sh\n(.*?)\n```", text, re.S)
    assert block, "README lost its declarative-management example"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_declaration_example_runs(server):
    import shlex

    lines = example_lines()
    assert len(lines) >= 5
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == "ipad-mdm"
        proc = _cli(server, *argv[1:], check=False)
        assert proc.returncode == 0, (line, proc.stderr)
    shown = json.loads(_cli(server, "declaration", "show", "vpcp.passcode").stdout)
    assert shown["version"] == 2 and shown["payload"]["MinimumLength"] == 8
    # An iPad enrolling now gets both, and its set validates.
    sim = server.simulator()
    sim.enroll(server.enrollment_url())
    server.wait_pushes()
    sim.process_commands()
    assert {"vpcp.passcode", "vpcp.ipados-18-2"} <= set(sim.ddm.declarations)
    assert sim.ddm.declarations["vpcp.passcode"]["Payload"]["MinimumLength"] == 8
    sim.close()
