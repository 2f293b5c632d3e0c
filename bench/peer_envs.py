"""The peers' virtualenvs: one per peer, pinned, cached under ``~/.cache/jobchain-bench/peers/``.

Each peer of ``bench_peers.py`` runs in a virtualenv of its own, made with
``python -m venv`` and filled by pip from the package registry with pinned
versions (hiredis everywhere), so no peer's dependencies meet jobchain's or
another peer's. A venv is made once per ``<name>-<version>`` and reused; a
marker file written after pip succeeds tells a finished venv from a broken one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("JOBCHAIN_BENCH_CACHE", Path.home() / ".cache" / "jobchain-bench")) / "peers"
#: installed into every venv: the Redis parser the jobchain side uses (and its redis-py, where the
#: peer allows it: ``redis`` below)
COMMON = ("hiredis==3.5.0",)


@dataclass(frozen=True)
class PeerEnv:
    name: str  # the peer's name in the table
    version: str  # the pinned version of its main distribution
    requirements: tuple[str, ...]  # pip requirements, pinned
    redis: str = "redis==8.1.0"  # redis-py; a peer that caps it gets the newest it takes

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}-{self.version}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, script: str) -> Path:
        return self.path / "bin" / script

    @property
    def pins(self) -> str:
        return " ".join((self.redis, *COMMON, *self.requirements))

    def ready(self) -> bool:
        """A finished venv with these very pins (a changed pin makes it again)."""
        marker = self.path / ".jobchain-bench-ok"
        return marker.exists() and marker.read_text().strip() == self.pins


ENVS: dict[str, PeerEnv] = {
    env.name: env
    for env in (
        PeerEnv("huey", "3.5.4", ("huey==3.5.4",)),
        PeerEnv("dramatiq", "2.2.1", ("dramatiq[redis]==2.2.1",)),
        PeerEnv("rq", "3.0.0", ("rq==3.0.0",)),
        PeerEnv("taskiq", "0.13.0", ("taskiq==0.13.0", "taskiq-redis==1.2.4", "taskiq-pipelines==0.1.4")),
        PeerEnv("arq", "0.28.0", ("arq==0.28.0",), redis="redis==5.3.1"),
        PeerEnv("saq", "0.26.4", ("saq==0.26.4", "typing-extensions==4.16.0")),  # saq imports it, undeclared
        PeerEnv("celery", "5.7.0", ("celery[redis]==5.7.0",)),
    )
}


def ensure(env: PeerEnv, *, log: Path | None = None) -> PeerEnv:
    """Make ``env``'s virtualenv unless a finished one is cached; raise with pip's output on failure."""
    if env.ready():
        return env
    if env.path.exists():
        shutil.rmtree(env.path)  # a half-made venv from an interrupted run
    env.path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        subprocess.run([sys.executable, "-m", "venv", str(env.path)], check=True, stdout=out, stderr=out)
        pip = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        proc = subprocess.run(
            [*pip, env.redis, *COMMON, *env.requirements], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"pip could not install {env.name}: {proc.stdout.decode(errors='replace')[-1500:]}"
            )
    finally:
        if log and not isinstance(out, int):
            out.close()
    (env.path / ".jobchain-bench-ok").write_text(env.pins + "\n")
    return env


def main(argv: Sequence[str] | None = None) -> int:
    """``python bench/peer_envs.py [NAME ...]``: make (or check) the named venvs, all by default."""
    names = list(argv if argv is not None else sys.argv[1:]) or list(ENVS)
    for name in names:
        env = ensure(ENVS[name])
        print(f"{name}: {env.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
