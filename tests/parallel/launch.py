"""Start W local processes with torchrun's environment variables and wait for them (test helper)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The environment torchrun gives rank `rank` of `world` on one machine."""
    env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
               LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               OMP_NUM_THREADS="1", MOEPLACE_NO_PROGRESS="1")
    return env


def start(argv: list[str], world: int, cwd: Path | None = None) -> list[subprocess.Popen]:
    """Start `python argv...` as ranks 0..world-1 of one process group."""
    port = free_port()
    return [subprocess.Popen([sys.executable, *argv], env=rank_env(r, world, port), cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in range(world)]


def wait_all(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of every process; kill all of them if any runs past `timeout`."""
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def run(argv: list[str], world: int, timeout: float = 240,
        cwd: Path | None = None) -> list[tuple[int, str, str]]:
    """Run `python argv...` on `world` ranks; assert every rank exits 0 (showing stderr if not)."""
    results = wait_all(start(argv, world, cwd), timeout)
    for rank, (rc, _, err) in enumerate(results):
        assert rc == 0, f"rank {rank} exited {rc}:\n{err[-3000:]}"
    return results
