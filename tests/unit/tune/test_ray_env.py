"""cmmd_dist.tune.ray_env: Ray Tune copies AWS credentials into trial runtime envs (until it doesn't), and we stop it.

Each check runs in a fresh interpreter: the workaround changes Ray's module state for the whole process,
and a sweep test in the same pytest session may already have applied it.
"""

import json
import os
import subprocess
import sys

CHECK = """
import json
from ray.tune.execution.class_cache import _ActorClassCache

def env_vars(name):
    # what Tune passes to ray.remote for a trainable: the runtime env that Ray then logs in clear text
    return _ActorClassCache().get(type(name, (), {}))._default_options["runtime_env"]["env_vars"]

before = env_vars("Before")
from cmmd_dist.tune.ray_env import keep_credentials_out_of_runtime_env, tune_copies_credentials
keep_credentials_out_of_runtime_env()
keep_credentials_out_of_runtime_env()  # idempotent
print(json.dumps({"before": before, "after": env_vars("After"), "left": sorted(tune_copies_credentials())}))
"""

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "unit-test-access", "AWS_SECRET_ACCESS_KEY": "unit-test-secret",
               "AWS_SESSION_TOKEN": "unit-test-token"}


def run_check() -> dict:
    env = {**os.environ, **CREDENTIALS}
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_ray_tune_still_copies_aws_credentials_into_trial_runtime_envs():
    before = run_check()["before"]
    copied = {k for k in CREDENTIALS if before.get(k) == CREDENTIALS[k]}
    assert copied == set(CREDENTIALS), (
        f"Ray Tune no longer copies {sorted(set(CREDENTIALS) - copied)} into trial runtime envs: "
        "remove cmmd_dist/tune/ray_env.py, its call in cmmd_dist/tune/sweep.py run_sweep and this test"
    )


def test_the_workaround_keeps_credentials_out_and_the_rest_in():
    result = run_check()
    assert not set(CREDENTIALS) & set(result["after"]), result["after"]
    assert not any(v in CREDENTIALS.values() for v in result["after"].values())
    assert result["left"] == []
    # Tune's other variables still travel
    assert result["after"] == {k: v for k, v in result["before"].items() if k not in CREDENTIALS}
    assert result["after"], "expected Tune's own variables (e.g. PL_DISABLE_FORK) to remain"
