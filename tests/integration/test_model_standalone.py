"""A registered champion stands alone: it loads and serves where cmmd_dist is NOT installed.

A throwaway virtualenv gets only the model's own ``requirements.txt`` (torch first as the very build of
this venv, the CPU one: never a CUDA download). There, ``mlflow.pyfunc.load_model("models:/cmmd-digits2v@champion")``
must classify / generate / embed exactly as this process does, refuse NaN input, and
``mlflow models serve --env-manager local`` must answer the model's own input example over REST.
In the dev venv, loading the model must not hide the installed cmmd_dist (the bundled code has a name
of its own). The virtualenv is built once per session (about two minutes, from pip's sources and cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from cmmd_dist.datasets.loaders import DIGITS2V_SPEC
from cmmd_dist.model import CMMD, CMMDConfig, ModalityDef
from cmmd_dist.tracking.pyfunc import TASKS, rows_frame
from cmmd_dist.tracking.store import Tracker
from waiting import answers, wait_for

pytestmark = pytest.mark.integration

MODEL = "models:/cmmd-digits2v@champion"


def clean_env(uri: str, python: Path | None = None) -> dict[str, str]:
    """A downstream user's environment: the store's URI, nothing of this venv, no keys; with ``python``, its
    virtualenv activated (``mlflow models serve`` finds ``uvicorn`` on PATH)."""
    drop = ("PYTHON", "VIRTUAL_ENV", "MLFLOW_", "AWS_", "CONDA")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != str(Path(sys.executable).parent))
    if python is not None:
        env.update(VIRTUAL_ENV=str(python.parent.parent), PATH=f"{python.parent}{os.pathsep}{env['PATH']}")
    return {**env, "MLFLOW_TRACKING_URI": uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@pytest.fixture(scope="session")
def champion(tmp_path_factory):
    """cmmd-digits2v@champion in a SQLite store of its own, and 6 test rows with this process's answers."""
    import mlflow.pyfunc

    base = tmp_path_factory.mktemp("standalone-store")
    tracker = Tracker(f"sqlite:///{base / 'mlruns.db'}")
    torch.manual_seed(0)
    core = CMMD(CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),),
                           num_classes=10, zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,),
                           classifier_hidden=(8,))).eval()
    x = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    parent = tracker.start_sweep("digits2v", None, {})
    run = tracker.retrain_run(parent, {"seed": 0})
    tracker.register_best(run, core, DIGITS2V_SPEC, {"error": 0.5}, "digits2v", None, {"view1": x[:3]})
    tracker.end_run(run)
    tracker.end_run(parent)
    folder = tracker.download("cmmd-digits2v", dst=base / "pulled")
    model = mlflow.pyfunc.load_model(str(folder))  # in process: the dev venv, cmmd_dist installed
    answers = {t: model.predict(rows_frame({"view1": x}), params={"task": t}) for t in TASKS}
    return {"uri": tracker.uri, "folder": folder, "core": core, "x": x, "answers": answers, "base": base}


def _pip(python: Path, *args: str, log: Path) -> subprocess.CompletedProcess:
    with open(log, "a") as out:
        return subprocess.run([str(python), "-m", "pip", "install", "-q", *args], stdout=out, stderr=subprocess.STDOUT,
                              timeout=900)


@pytest.fixture(scope="session")
def clean_python(champion, tmp_path_factory):
    """The python of a virtualenv holding the model's requirements.txt and nothing of this project.

    Built in the session's temporary folder; with CMMD_CLEAN_VENV_CACHE=<folder> it is kept there, named by a
    digest of the requirements and torch build, and reused by later sessions (a rebuild takes minutes)."""
    ours = torch.__version__
    if torch.version.cuda is not None or (sys.platform == "linux" and "+cpu" not in ours):
        pytest.skip(f"this venv's torch {ours} is not the CPU build: the clean venv would download a CUDA one")
    reqs = champion["folder"] / "requirements.txt"
    log = tmp_path_factory.getbasetemp() / "clean-venv-pip.log"
    cache = os.environ.get("CMMD_CLEAN_VENV_CACHE")
    if cache:
        key = hashlib.sha256(f"{reqs.read_text()}|{torch.__version__}|{sys.version}".encode()).hexdigest()[:12]
        venv = Path(cache) / f"clean-{key}"
        if (venv / "complete").exists():
            yield venv / "bin" / "python"
            return
        shutil.rmtree(venv, ignore_errors=True)
    else:
        venv = tmp_path_factory.mktemp("clean-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # torch first, pinned with this venv's local label (2.13.0+cpu): the requirement torch==2.13.0 is then met
    # and pip never looks at the multi-GB CUDA build
    if _pip(python, f"torch=={ours}", log=log).returncode:
        if _pip(python, f"torch=={ours}", "--extra-index-url", "https://download.pytorch.org/whl/cpu", log=log).returncode:
            pytest.skip(f"no source of the CPU wheel torch=={ours} for a clean venv; see {log}")
    got = _pip(python, "-r", str(reqs), log=log)
    assert got.returncode == 0, f"the model's requirements.txt does not install: {log.read_text()[-3000:]}"
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True,
                            check=True).stdout
    names = {p["name"].lower(): p["version"] for p in json.loads(listed)}
    assert names["torch"] == ours and not any(n.startswith("nvidia") for n in names)
    assert "cmmd-dist" not in names and "cmmd_dist" not in names
    (venv / "complete").write_text(reqs.read_text())
    yield python
    if not cache:
        shutil.rmtree(venv, ignore_errors=True)  # 1.7 GB: not left for pytest's three kept temporary folders


def test_requirements_and_signature_say_what_the_model_needs(champion):
    import mlflow.models

    folder = champion["folder"]
    reqs = (folder / "requirements.txt").read_text().split()
    assert sorted(r.split("==")[0] for r in reqs) == ["mlflow", "numpy", "pandas", "torch"]
    assert f"torch=={torch.__version__.split('+')[0]}" in reqs
    info = mlflow.models.Model.load(str(folder))
    assert info.flavors["python_function"]["code"] == "code"
    bundled = [p.name for p in (folder / "code").iterdir()]
    assert len(bundled) == 1 and bundled[0].startswith("cmmd_model_")  # not a top-level cmmd_dist
    sig = info.signature
    assert [c.name for c in sig.inputs.inputs] == ["view1"]
    assert [c.name for c in sig.outputs.inputs] == ["label", "probs", "view2", "z"]
    assert sig.params.params[0].name == "task"
    assert info.metadata["tasks"] == {"classify": ["label", "probs"], "generate": ["view2"], "embed": ["z"]}
    assert info.metadata["shapes"] == {"view1": [8, 8], "view2": [8, 8]}


def test_bundled_model_code_is_renamed_and_refuses_imports_beyond_torch(tmp_path):
    from cmmd_dist.tracking.pyfunc import bundle_model_code

    src = tmp_path / "src" / "model"
    src.mkdir(parents=True)
    (src / "__init__.py").write_text("from cmmd_dist.model.net import Net\n")
    (src / "net.py").write_text('"""cmmd_dist.cli.models stays."""\nimport math\nimport torch\nNet = torch.nn.Linear\n')
    out = bundle_model_code(tmp_path / "code", src)
    assert out.name.startswith("cmmd_model_")
    assert (out / "__init__.py").read_text() == f"from {out.name}.net import Net\n"
    assert "cmmd_dist.cli.models stays" in (out / "net.py").read_text()
    (src / "net.py").write_text("import numpy\n")
    with pytest.raises(RuntimeError, match=r"net\.py imports numpy: the registered model bundles cmmd_dist/model alone"):
        bundle_model_code(tmp_path / "code2", src)
    (src / "net.py").write_text("from cmmd_dist.storage import open_uri\n")
    with pytest.raises(RuntimeError, match=r"net\.py imports cmmd_dist\.storage"):
        bundle_model_code(tmp_path / "code3", src)


def test_loading_in_the_dev_venv_keeps_the_installed_cmmd_dist(champion):
    """A fresh dev interpreter that loads the champion BEFORE importing cmmd_dist still gets the real package."""
    code = textwrap.dedent(f"""
        import mlflow.pyfunc, sys
        model = mlflow.pyfunc.load_model({MODEL!r})
        assert not any(k == "cmmd_dist" or k.startswith("cmmd_dist.") for k in sys.modules), "loaded cmmd_dist"
        import cmmd_dist.tracking, cmmd_dist.model
        core, spec = cmmd_dist.tracking.pull("cmmd-digits2v")
        print(cmmd_dist.__file__, type(model.unwrap_python_model().core).__module__, type(core).__module__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=clean_env(champion["uri"]), cwd=champion["base"])
    assert out.returncode == 0, out.stderr[-3000:]
    package_file, bundled, pulled = out.stdout.split()
    assert Path(package_file).resolve() == (Path(__file__).parents[2] / "cmmd_dist" / "__init__.py").resolve()
    assert bundled.startswith("cmmd_model_") and pulled == "cmmd_dist.model.cmmd"


CLEAN_CLIENT = """
import importlib.util, sys
import mlflow.pyfunc, numpy as np, pandas as pd
assert importlib.util.find_spec("cmmd_dist") is None, "cmmd_dist is importable in the clean venv"
x = np.load(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/cmmd-digits2v@champion")
df = pd.DataFrame({"view1": list(x.reshape(len(x), -1))})
out = {t: model.predict(df, params={"task": t}) for t in ("classify", "generate", "embed")}
bad = x.reshape(len(x), -1).copy()
bad[4, 7] = np.nan
try:
    model.predict(pd.DataFrame({"view1": list(bad)}), params={"task": "embed"})
    refused = "accepted"
except ValueError as err:
    refused = str(err)
assert not [m for m in sys.modules if m.split(".")[0] == "cmmd_dist"]
np.savez(sys.argv[2], label=out["classify"]["label"].to_numpy(), probs=np.stack(out["classify"]["probs"]),
         gen=np.stack(out["generate"]["view2"]), z=np.stack(out["embed"]["z"]), refused=np.array(refused))
"""


def test_champion_loads_and_predicts_in_a_clean_venv(champion, clean_python, tmp_path):
    np.save(tmp_path / "x.npy", champion["x"])
    (tmp_path / "client.py").write_text(CLEAN_CLIENT)
    out = subprocess.run([str(clean_python), "client.py", "x.npy", "out.npz"], capture_output=True, text=True,
                         timeout=300, env=clean_env(champion["uri"], clean_python), cwd=tmp_path)  # cwd: not the source tree
    assert out.returncode == 0, out.stderr[-3000:]
    got, ref = np.load(tmp_path / "out.npz"), champion["answers"]
    np.testing.assert_array_equal(got["label"], ref["classify"]["label"].to_numpy())
    np.testing.assert_allclose(got["probs"], np.stack(ref["classify"]["probs"]), rtol=1e-6)
    np.testing.assert_allclose(got["gen"], np.stack(ref["generate"]["view2"]), rtol=1e-6)
    np.testing.assert_allclose(got["z"], np.stack(ref["embed"]["z"]), rtol=1e-6)
    direct = champion["core"].predict({"view1": torch.from_numpy(champion["x"])})
    np.testing.assert_array_equal(got["label"], direct["probs"].argmax(1).numpy())
    assert str(got["refused"]) == "column 'view1': row 4 has NaN/inf values (1 of 6 rows do); the model needs finite inputs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_in_the_clean_venv_answers_the_input_example(champion, clean_python, tmp_path):
    port = _free_port()
    mlflow_cli = clean_python.parent / "mlflow"
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", MODEL, "--env-manager", "local",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                env=clean_env(champion["uri"], clean_python), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: the uvicorn worker goes with it
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(answers(f"{base}/ping", proc, "mlflow models serve", tmp_path / "serve.log"), 180, interval=0.5,
                 what=lambda: f"mlflow models serve to answer /ping: {(tmp_path / 'serve.log').read_text()[-3000:]}")
        example = json.loads((champion["folder"] / "serving_input_example.json").read_text())
        assert example["params"] == {"task": "classify"} and example["dataframe_split"]["columns"] == ["view1"]
        rows = np.asarray(example["dataframe_split"]["data"], dtype=np.float32)[:, 0]  # (3, 64)
        replies = {}
        for task in TASKS:
            r = requests.post(f"{base}/invocations", json={**example, "params": {"task": task}}, timeout=60)
            assert r.status_code == 200, r.text[-2000:]
            replies[task] = r.json()["predictions"]
        assert all(len(p) == 3 for p in replies.values())
        assert [len(p["probs"]) for p in replies["classify"]] == [10] * 3
        assert [len(p["view2"]) for p in replies["generate"]] == [64] * 3
        assert [len(p["z"]) for p in replies["embed"]] == [3] * 3
        ref = champion["core"].predict({"view1": torch.from_numpy(rows.reshape(3, 8, 8))})
        assert [p["label"] for p in replies["classify"]] == ref["probs"].argmax(1).tolist()
        np.testing.assert_allclose([p["probs"] for p in replies["classify"]], ref["probs"].numpy(), rtol=1e-5)
        bad = {**example, "dataframe_split": {**example["dataframe_split"],
                                              "data": [[[float("nan")] * 64]]}}
        r = requests.post(f"{base}/invocations", data=json.dumps(bad), headers={"Content-Type": "application/json"},
                          timeout=60)
        assert r.status_code >= 400 and "NaN/inf" in r.text
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (it and its uvicorn worker), SIGKILL after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # already gone
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
