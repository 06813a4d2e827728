"""A non-editable install carries the task and protocol YAML: `vtabkit list tasks` works anywhere."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_non_editable_install_ships_definitions(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, cwd=tmp_path)
    shipped = {p.relative_to(target / "vtabkit" / "_tasks") for p in (target / "vtabkit" / "_tasks").rglob("*.yaml")}
    in_repo = {p.relative_to(REPO / "tasks") for p in (REPO / "tasks").rglob("*.yaml")}
    assert shipped == in_repo
    env = dict(os.environ, PYTHONPATH=str(target))
    listed = subprocess.run([sys.executable, "-m", "vtabkit", "list", "tasks"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    assert "lite_digits" in listed
    check = "import vtabkit.protocols as p, vtabkit; print(vtabkit.__file__); print(p.load_config('linear'))"
    shown = subprocess.run([sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True,
                           text=True, check=True).stdout
    assert shown.startswith(str(target)) and "l2_grid" in shown
    # The data that validate, the leaderboard and the reference tables read, from the install.
    check = ("from vtabkit import leaderboard, official, reference; "
             "print(leaderboard.TEMPLATE.is_file(), official.facts('lite_digits')['eval_sizes'], reference.names(), "
             "reference.reference_dir())")
    shown = subprocess.run([sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True,
                           text=True, check=True).stdout
    expected_refs = sorted(p.stem for p in (REPO / "results" / "reference").glob("*.csv"))
    assert shown.startswith(f"True {{'test': 797}} {expected_refs} {target}"), shown
