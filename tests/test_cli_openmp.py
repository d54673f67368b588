"""The CLI makes OpenMP wait passively (a 2-thread `train` on a busy CPU otherwise collapses), unless the user
chose a policy."""

import os
import subprocess
import sys

PROBE = "import os, livedenoise.cli, torch; print(os.environ['OMP_WAIT_POLICY'])"


def _policy(**env):
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                         timeout=300, check=True)
    return out.stdout.strip()


def test_the_cli_sets_passive_waiting_before_torch_loads():
    assert _policy() == "PASSIVE"


def test_a_policy_the_user_set_is_kept():
    assert _policy(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
