"""Keep AWS credentials out of the runtime envs that Ray Tune gives its trial actors.

Ray Tune 2.60 copies ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` and
``AWS_SECURITY_TOKEN`` from the driver's environment into every trainable's ``runtime_env["env_vars"]``
(``ray/tune/execution/class_cache.py``: ``ENV_VARS_TO_PROPAGATE``, read by ``_ActorClassCache.get``).
Ray records runtime envs in clear text: the session's ``runtime_env_agent.log``, the GCS, the dashboard
(upstream: https://github.com/ray-project/ray/issues/28276 "Secure Env Variables", open; the
``secret_env_vars`` proposal https://github.com/ray-project/ray/pull/40549 was closed unmerged).

:func:`keep_credentials_out_of_runtime_env` takes those names out of Tune's list in the driver, before
``Tuner.fit``. Trials then find credentials where every Ray process does: the node's own environment,
``~/.aws`` or its instance profile (``cmmd_dist.storage.resolve_without_keys`` hands Ray a keyless
filesystem). ``tests/unit/tune/test_ray_env.py`` fails when Ray stops copying, i.e. when this module can go.
"""

from __future__ import annotations

__all__ = ["CREDENTIAL_VARS", "keep_credentials_out_of_runtime_env", "tune_copies_credentials"]

# every name whose value is a secret; Tune's list holds the first four in Ray 2.60
CREDENTIAL_VARS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"})


def tune_copies_credentials() -> frozenset[str]:
    """The credential variables that Ray Tune would copy into a trial's runtime env right now."""
    from ray.tune.execution import class_cache

    return CREDENTIAL_VARS & frozenset(class_cache.ENV_VARS_TO_PROPAGATE)


def keep_credentials_out_of_runtime_env() -> None:
    """Stop Ray Tune, in this process, from copying AWS credentials into trial actors' runtime envs.

    Idempotent; call it in the sweep driver before the Tuner starts its first trial (the runtime env is
    fixed when Tune registers the trainable)."""
    from ray.tune.execution import class_cache

    # a module-level set that _ActorClassCache.get reads on each call: shrinking it in place is enough
    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(CREDENTIAL_VARS)
