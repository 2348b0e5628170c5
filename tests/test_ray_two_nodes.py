"""The two-node Ray cluster tests (tests/ray_cluster/) in a fresh pytest inside a private network namespace that has
only loopback: Ray cannot reach or advertise anything but 127.0.0.1 there. The longest single test of the suite,
so tests/conftest.py schedules it first."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO
from ray_cluster.cluster import IN_NETNS, in_loopback_netns, netns_unavailable

NETNS_TIMEOUT_S = 900


@pytest.mark.parametrize("selection", ["not slow", pytest.param("slow", marks=pytest.mark.slow)])
def test_two_node_cluster_tests_pass_in_a_loopback_only_network_namespace(selection):
    """tests/ray_cluster/ in a fresh pytest inside `unshare -n`: Ray cannot reach or advertise anything but 127.0.0.1.
    Its slow tests (the killed worker node and its resume, a Ray job per step) run in `make test-slow`. CI
    (FTLAB_REQUIRE_RAY_NETNS=1) fails when the namespace cannot be made; elsewhere the test skips."""
    reason = netns_unavailable()
    if reason:
        if os.environ.get("FTLAB_REQUIRE_RAY_NETNS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "RAY_"))}
    env[IN_NETNS] = "1"
    inner = [sys.executable, "-m", "pytest", "tests/ray_cluster", "-q", "-p", "no:cacheprovider", "-rA",
             "-o", "console_output_style=classic", "--durations=0", "-m", selection]
    done = subprocess.run(in_loopback_netns(inner), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=NETNS_TIMEOUT_S)
    print(done.stdout[-6000:])
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-4000:]
    summary = done.stdout.strip().splitlines()[-1]  # e.g. "7 passed, 1 deselected in 150.2s"
    assert re.fullmatch(r"=* ?\d+ passed(, \d+ deselected)?(, \d+ warnings?)? in .*", summary), summary
