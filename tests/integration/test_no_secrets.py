"""No credential reaches storage, logs or MLflow: a real smoke sweep on SeaweedFS S3, then every file it wrote
is searched for the access key and the secret (bucket objects, the Ray session's logs, the MLflow server's
store and the sweep's local output).

The sweep is given its MLflow server as ``http://user:password@host``: the password must not reach the bucket
(``tuner.pkl`` pickles the tracking callback), the output or what the sweep prints (issue 23).

Before ``cmmd_dist.storage.resolve_without_keys`` and ``cmmd_dist.tune.workarounds``, ``tuner.pkl`` and the searcher
state in the bucket held both keys (a pickled S3FileSystem built with them), and the Ray session's
``runtime_env_agent.log`` held them too (Ray Tune copies AWS_* into each trial's runtime env).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from cmmd_dist.config import SweepConfig
from cmmd_dist.storage import create_bucket, s3_client
from cmmd_dist.tune import run_sweep

pytestmark = pytest.mark.integration

BUCKET = "cmmd-no-secrets"
MLFLOW_PASSWORD = "mlflow-pw-in-the-url"


def blobs_with(blob: bytes, needles: dict[str, bytes]) -> set[str]:
    """Names of the needles found in ``blob`` or, for a zip archive (torch checkpoints, models), in its members."""
    found = {name for name, needle in needles.items() if needle in blob}
    if blob[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(blob)) as z:
                for member in z.namelist():
                    found |= blobs_with(z.read(member), needles)
        except (zipfile.BadZipFile, OSError):
            pass
    return found


def scan_folder(root: Path, needles: dict[str, bytes]) -> tuple[int, dict[str, set[str]]]:
    """(files read, {file: needles found}) for every regular file under ``root``."""
    count, hits = 0, {}
    for path in root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            blob = path.read_bytes()
        except OSError:  # a socket, or a file removed while we walk
            continue
        count += 1
        if found := blobs_with(blob, needles):
            hits[str(path)] = found
    return count, hits


def scan_buckets(settings, needles: dict[str, bytes]) -> tuple[dict[str, int], dict[str, set[str]]]:
    """({bucket: objects read}, {s3 uri: needles found}) over every bucket of the S3 server."""
    client = s3_client(settings)
    counts, hits = {}, {}
    for bucket in (b["Name"] for b in client.list_buckets()["Buckets"]):
        counts[bucket] = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                counts[bucket] += 1
                blob = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                if found := blobs_with(blob, needles):
                    hits[f"s3://{bucket}/{obj['Key']}"] = found
    return counts, hits


def test_a_sweep_on_s3_writes_no_credentials_anywhere(ray_session, s3_server, mlflow_server, tmp_path, monkeypatch,
                                                       capfd):
    settings = s3_server.settings
    needles = {"access key": settings.access_key.encode(), "secret": settings.secret_key.encode(),
               "mlflow password": MLFLOW_PASSWORD.encode()}
    for key, value in s3_server.env().items():  # the driver reads the sweep storage with its own credentials
        monkeypatch.setenv(key, value)
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):  # set by the sweep; restored after the test
        monkeypatch.setenv(key, "placeholder")
    create_bucket(BUCKET, settings)
    out = tmp_path / "out"
    # credentials in --mlflow (the test server has no auth app: it ignores them, the sweep must not keep them)
    mlflow = mlflow_server.uri.replace("http://", f"http://cmmd-user:{MLFLOW_PASSWORD}@")
    lines: list[str] = []
    summary = run_sweep(SweepConfig(dataset="digits2v", preset="smoke", num_trials=2, seed=0, name="no-secrets",
                                    storage=f"s3://{BUCKET}/sweeps", output_dir=str(out), mlflow=mlflow),
                        log=lambda *a: lines.append(" ".join(map(str, a))))
    assert len(summary["trials"]) == 2 and summary["model_uri"].startswith("models:")
    printed = "\n".join(lines) + "".join(capfd.readouterr())
    assert "browse the sweep: open " + mlflow_server.uri in printed
    assert MLFLOW_PASSWORD not in printed

    counts, hits = scan_buckets(settings, needles)
    # the scan saw what the sweep wrote: Tune's state, the trials' Ray Train runs, MLflow's artifacts
    keys = [o["Key"] for o in s3_client(settings).list_objects_v2(Bucket=BUCKET, Prefix="sweeps/")["Contents"]]
    assert any(k.endswith("tuner.pkl") for k in keys) and any("searcher-state" in k for k in keys), keys
    assert any(k.startswith("sweeps/no-secrets-train/") for k in keys), keys
    assert counts.get("mlflow", 0) > 0, counts

    session_dir = Path(ray_session._private.worker._global_node.get_session_dir_path())
    folders = {"ray session": session_dir, "mlflow server": mlflow_server.workdir, "sweep output": out}
    for label, folder in folders.items():
        read, found = scan_folder(folder, needles)
        assert read > 0, f"nothing to scan in the {label} folder {folder}"
        hits.update(found)
    assert (session_dir / "logs" / "runtime_env_agent.log").exists() or any(session_dir.glob("logs/runtime_env*"))
    assert (mlflow_server.workdir / "mlflow.db").exists()
    assert not hits, f"credentials written to: {hits}"
