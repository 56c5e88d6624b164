"""A non-editable install carries what the package reads at run time: its configs and search spaces.

The package is built into a wheel from a copy of its sources (nothing is written to the checkout), installed
into a folder of its own, and imported from another directory, where no ``search_spaces/`` folder exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_a_wheel_install_finds_every_search_space_and_config(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "cmmd_dist", src / "cmmd_dist", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("cmmd_dist-*.whl")
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import cmmd_dist; from cmmd_dist.tune.search_space import load_search_space, packaged_spaces; "
            "from cmmd_dist.cli.app import default_config_path; "
            "print(cmmd_dist.__file__); print(*sorted(p.stem for p in packaged_spaces().glob('*.yaml'))); "
            "print(load_search_space('digits2v').with_preset('smoke').folds.k, default_config_path('digits2v'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}, check=True).stdout.splitlines()
    assert out[0].startswith(str(site))  # the installed copy, not the checkout
    assert out[1].split() == sorted(p.stem for p in (ROOT / "cmmd_dist" / "search_spaces").glob("*.yaml"))
    assert out[2].split()[1].startswith(str(site))
