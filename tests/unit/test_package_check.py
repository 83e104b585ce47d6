"""The Registry package check (.ci/check_package.py) flags what the Registry's scanner would."""

import importlib.util
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("check_package", ROOT / ".ci" / "check_package.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def package(tmp_path, files: dict[str, str]) -> str:
    path = tmp_path / "node.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return str(path)


@pytest.mark.parametrize("source,finding", [
    ("import subprocess\n", "a.py:1: imports subprocess"),
    ("x = 1\nfrom urllib.request import urlopen\n", "a.py:2: imports urllib.request"),
    ("import http.client as h\n", "a.py:1: imports http.client"),
    ("import os\nos.system('ls')\n", "a.py:2: calls os.system()"),
    ("eval('1')\n", "a.py:1: calls eval()"),
])
def test_python_network_and_process_use_is_flagged(tmp_path, source, finding):
    assert check.findings(package(tmp_path, {"a.py": source})) == [finding]


def test_clean_python_and_the_frontends_own_api_are_not_flagged(tmp_path):
    files = {"nodes/a.py": "import torch\nfrom .x import y\nimport json\n",
             "web/a.js": 'const r = await api.fetchApi("/upload/image", { method: "POST" });\n'}
    assert check.findings(package(tmp_path, files)) == []


def test_javascript_requests_elsewhere_are_flagged(tmp_path):
    files = {"web/a.js": "// x\nfetch('https://example.com');\nnew WebSocket(u);\n"}
    assert check.findings(package(tmp_path, files)) == ["web/a.js:2: fetch(", "web/a.js:3: new WebSocket"]


def test_the_command_line_fails_on_a_finding(tmp_path, capsys):
    assert check.main([package(tmp_path, {"a.py": "import socket\n"})]) == 1
    assert "flagged: a.py:1: imports socket" in capsys.readouterr().out
    assert check.main([package(tmp_path, {"a.py": "import json\n"})]) == 0
