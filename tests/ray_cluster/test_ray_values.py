"""Placement values and the error without Ray; no cluster needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

import nimflow as nf
from nimflow._exceptions import UserInputError

# Hides Ray from this one interpreter, as if it were not installed.
_WITHOUT_RAY = """
import sys
class Hide:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hide)
import nimflow as nf
try:
    nf.ActorEnvironment("a", server=nf.LocalProcess("serve {port}"), placement=nf.Ray(address="auto"))
except nf.ActorConfigError as exc:
    print(exc)
"""


def test_without_ray_a_ray_placement_says_what_to_install() -> None:
    done = subprocess.run([sys.executable, "-c", _WITHOUT_RAY], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "needs Ray, which is not installed: `pip install 'nimflow[ray]'`" in done.stdout


def test_placement_values(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'nimflow[ray]'")
    from nimflow.actors.launchers.ray import parse_placement

    monkeypatch.delenv("NIMFLOW_RAY_ADDRESS", raising=False)
    assert parse_placement("ray").resolved_address() == "auto"
    assert parse_placement("ray:10.0.0.5:6379") == nf.Ray(address="10.0.0.5:6379")
    monkeypatch.setenv("NIMFLOW_RAY_ADDRESS", "10.0.0.7:6379")
    assert nf.Ray().resolved_address() == "10.0.0.7:6379"
    assert nf.Ray(address="auto").resolved_address() == "auto"
    with pytest.raises(UserInputError, match="ray:ADDRESS"):
        parse_placement("kubernetes")
    with pytest.raises(UserInputError, match=r"placement must be nf\.Ray"):
        nf.ActorEnvironment("a", server=nf.LocalProcess("serve {port}"), placement="ray")  # type: ignore[arg-type]
