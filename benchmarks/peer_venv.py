"""Virtual environments of their own for code that cannot share the project's venv.

jax and gymnax want a numpy that the project's pins (numpy < 2, for
sample-factory) refuse, and a CUDA build of torch is several GB the CPU
machines do not need. ``ensure_venv(name, packages)`` makes
``benchmarks/.peers/<name>/`` (gitignored) on first use, installs
``packages`` with pip and returns its Python. When the install fails (no
registry reachable, no wheel for this platform) it raises
``PeerUnavailable`` with pip's last line as the reason, so a benchmark can
mark that peer "not installed" and go on with the rest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
STAMP = ".installed"


class PeerUnavailable(RuntimeError):
    """A peer's virtualenv could not be made; the message says why, in one line."""


def _stamp_text(packages: list[str], extra_args: list[str]) -> str:
    return hashlib.sha256("\n".join([*packages, "--", *extra_args]).encode()).hexdigest()


def venv_python(name: str, root: Path | None = None) -> Path:
    return (root or PEERS_DIR) / name / "bin" / "python"


def ensure_venv(name: str, packages: list[str], extra_args: list[str] | tuple[str, ...] = (),
                root: Path | None = None, install: bool = True, log=None) -> Path:
    """The Python of ``root/name`` with ``packages`` installed (made or updated here).

    ``install=False`` only looks: a venv that is missing or was made for other
    packages is then ``PeerUnavailable``. ``log`` receives progress lines
    (default: stderr), since an install takes a minute or more.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    root = root or PEERS_DIR
    folder = root / name
    py = venv_python(name, root)
    want = _stamp_text(list(packages), list(extra_args))
    stamp = folder / STAMP
    if py.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return py
    if not install:
        raise PeerUnavailable(f"not installed: {folder} is missing or out of date "
                              f"(run without --no-install to make it)")
    log(f"[peers] making {folder} with {' '.join(packages)} (first use: a minute or more)...")
    if not py.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        base = getattr(sys, "_base_executable", None) or sys.executable
        # No pip of its own (ensurepip takes several seconds): this Python's pip installs
        # into it through --python.
        proc = subprocess.run([base, "-m", "venv", "--without-pip", str(folder)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise PeerUnavailable(f"not installed: python -m venv failed: {_last_line(proc)}")
    cmd = [sys.executable, "-m", "pip", "--python", str(py), "install", "--disable-pip-version-check",
           "--progress-bar", "off", *extra_args, *packages]
    # pip's own lines are the progress here (one per package it collects).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PIP_NO_INPUT": "1"})
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if not line or line.startswith("WARNING: Location"):
            continue
        tail = (tail + [line])[-20:]
        if line.startswith(("Collecting", "Successfully installed", "ERROR")):
            log(f"[peers]   {line[:160]}")
    if proc.wait() != 0:
        reason = next((ln for ln in reversed(tail) if ln.startswith("ERROR")), tail[-1] if tail else "")
        raise PeerUnavailable(f"not installed: pip install {' '.join(packages)} failed: {reason}")
    stamp.write_text(want + "\n")
    return py


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"
