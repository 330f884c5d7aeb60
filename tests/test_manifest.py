"""The npe2 manifest is valid, installed inside the package, and its commands resolve."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from npe2 import PluginManager, PluginManifest

import napari_temseg

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_manifest_is_valid():
    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.name == "napari-temseg"


def test_packaged_manifest_is_the_top_level_one():
    packaged = Path(napari_temseg.__file__).parent / "napari.yaml"
    assert packaged.is_file()
    assert yaml.safe_load(packaged.read_text()) == yaml.safe_load(
        (ROOT / "napari.yaml").read_text()
    )


def test_plugin_is_discovered_through_its_entry_point():
    pm = PluginManager()
    pm.discover()
    manifest = pm.get_manifest("napari-temseg")
    assert manifest.display_name == "TEM Segmentation"
    assert {s.key for s in manifest.contributions.sample_data} >= {
        "stem_nanoparticles",
        "hrtem_nanoparticles",
    }


def test_every_command_resolves_to_a_callable():
    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), command.id


def test_npe2_validate_cli():
    from npe2.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["validate", "napari-temseg"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_wheel_ships_the_manifest_as_a_real_file(tmp_path):
    """`pip install .` (not only -e) must carry napari.yaml inside the package."""
    import subprocess
    import sys
    import zipfile

    import pytest

    pytest.importorskip("setuptools_scm")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_temseg-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        packaged = yaml.safe_load(zf.read("napari_temseg/napari.yaml"))
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt")))
    assert packaged == yaml.safe_load((ROOT / "napari.yaml").read_text())
    assert b"napari_temseg:napari.yaml" in entry_points


def test_every_widget_docks_from_the_plugins_menu(make_napari_viewer):
    """What Plugins > TEM Segmentation > ... does: each widget builds inside a real viewer."""
    from napari_temseg._launch import PLUGIN

    manifest = PluginManifest.from_file(ROOT / "napari.yaml")
    names = [w.display_name for w in manifest.contributions.widgets]
    assert names == ["Denoise", "Pretrain", "Train segmenter", "Measure", "Export masks"]
    viewer = make_napari_viewer()
    for name in names:
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
        assert dock is not None and widget is not None, name


def test_hub_and_package_metadata_agree():
    """What the napari hub and PyPI show: classifiers, URLs, description, changelog."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "Framework :: napari" in project["classifiers"]
    assert "version" in project["dynamic"]  # from git tags (setuptools-scm)
    hub = yaml.safe_load((ROOT / ".napari-hub" / "config.yml").read_text())
    for name, url in project["urls"].items():
        assert hub["project_urls"][name] == url
    description = (ROOT / ".napari-hub" / "DESCRIPTION.md").read_text()
    for widget in PluginManifest.from_file(ROOT / "napari.yaml").contributions.widgets:
        assert widget.display_name.split()[0].lower() in description.lower()
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text()


def test_the_version_comes_from_the_git_tag(tmp_path):
    """Releases are cut by tagging: setuptools-scm turns tag v9.8.7 into version 9.8.7."""
    setuptools_scm = pytest.importorskip("setuptools_scm")
    root = Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("needs git and a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    env = {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(tmp_path)}
    subprocess.run(
        ["git", "-C", str(clone), "tag", "-a", "v9.8.7", "-m", "release"],
        check=True,
        env={**os.environ, **env},
    )
    assert setuptools_scm.get_version(root=str(clone)) == "9.8.7"
