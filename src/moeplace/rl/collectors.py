"""Collectors: where rollouts are made, behind one interface the learner uses without knowing which.

    collector.collect(weights, n_steps) -> Rollout     (weights: the learner's policy state_dict)

- `LocalCollector`: the env (typically a batched vector env) and a policy copy in this process;
- `ProcessCollector`: one LocalCollector per worker process (torch.multiprocessing, spawn);
- `RayCollector`: one LocalCollector per Ray actor (`pip install 'moeplace[ray]'`; the caller
  starts Ray, e.g. `ray.init(num_cpus=2)`, or connects to a cluster).

Each is built from two picklable factories, `env_fn()` -> env and `policy_fn()` -> policy (with the
learner's architecture). Worker k samples with its own generator seeded `seed + k`, and the parts
come back in worker order, so a seeded run repeats exactly. `PPO.learn(..., collector=c)` trains from it.

Workers other than LocalCollector: `local_fn(seed)` -> any object with `n_envs` and
`collect(weights, n_steps)` (e.g. pre-training's one-design-at-a-time worker); `call(name, *args)`
runs that method on every worker between rollouts (e.g. which design to roll out next).
`make_collector(kind, local_fn, workers, seed)` builds any of the three from one `local_fn`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Callable
from typing import Any, Protocol

import gymnasium as gym
import torch

from moeplace.errors import InputError
from moeplace.rl.rollout import Rollout, RolloutWorker

EnvFn = Callable[[], gym.Env]
PolicyFn = Callable[[], torch.nn.Module]
LocalFn = Callable[[int], Any]  # seed -> a worker with n_envs and collect(weights, n_steps)
KINDS = ("local", "process", "ray")


class Collector(Protocol):
    """Makes rollouts with given policy weights."""

    @property
    def n_envs(self) -> int:
        """Envs per rollout (all workers together)."""
        ...

    def collect(self, weights: dict[str, torch.Tensor], n_steps: int) -> Rollout:
        """Load `weights` into the workers' policies and run `n_steps` steps of every env."""
        ...

    def close(self) -> None:
        """Stop the workers."""
        ...


class LocalCollector:
    """An env and a policy copy in this process."""

    def __init__(self, env_fn: EnvFn, policy_fn: PolicyFn, seed: int = 0, threads: int | None = 1) -> None:
        self.threads = threads
        self.policy = policy_fn()
        self.worker = RolloutWorker(env_fn(), self.policy, seed=seed)

    @property
    def n_envs(self) -> int:
        """Envs of the wrapped vector env."""
        return self.worker.n_envs

    def size(self) -> int:
        """n_envs as a method (what a Ray actor can be asked)."""
        return self.worker.n_envs

    def collect(self, weights: dict[str, torch.Tensor] | None, n_steps: int) -> Rollout:
        """Run `n_steps` steps with `weights` (None: keep the current ones)."""
        if weights is not None:
            self.policy.load_state_dict(weights)
        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)  # small per-step tensors: extra threads only spin
        try:
            return self.worker.collect(n_steps)
        finally:
            torch.set_num_threads(before)

    def call(self, name: str, *args: Any) -> list[Any]:
        """Run method `name` of this collector (what Process/RayCollector do on every worker)."""
        return [getattr(self, name)(*args)]

    def close(self) -> None:
        """Nothing to stop."""


def _local_fn(env_fn: EnvFn | None, policy_fn: PolicyFn | None, local_fn: LocalFn | None) -> LocalFn:
    """`local_fn`, or a LocalCollector factory over env_fn and policy_fn."""
    if local_fn is not None:
        return local_fn
    if env_fn is None or policy_fn is None:
        raise ValueError("a collector needs env_fn and policy_fn, or local_fn")
    return functools.partial(LocalCollector, env_fn, policy_fn)


def _serve(conn: Any, local_fn: LocalFn, seed: int) -> None:
    """Worker-process loop: build `local_fn(seed)`, answer ("collect", weights, n_steps) and
    ("call", name, args) until "close"."""
    torch.set_num_threads(1)
    try:
        local = local_fn(seed)
        conn.send(("ready", local.n_envs))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", repr(e)))
        return
    try:
        while True:
            msg = conn.recv()
            if msg[0] == "close":
                break
            try:
                if msg[0] == "call":
                    conn.send(("ok", getattr(local, msg[1])(*msg[2])))
                else:
                    conn.send(("ok", local.collect(msg[1], msg[2])))
            except Exception as e:  # noqa: BLE001
                conn.send(("error", repr(e)))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):  # Ctrl-C reaches the whole process group
        pass
    conn.close()


class ProcessCollector:
    """`workers` LocalCollectors (or `local_fn` workers) in worker processes (torch.multiprocessing,
    spawn start method)."""

    def __init__(self, env_fn: EnvFn | None, policy_fn: PolicyFn | None, workers: int = 2, seed: int = 0,
                 *, local_fn: LocalFn | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        import torch.multiprocessing as mp

        local_fn = _local_fn(env_fn, policy_fn, local_fn)
        ctx = mp.get_context("spawn")
        self._conns, self._procs = [], []
        for k in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, local_fn, seed + k), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._n_envs = sum(self._recv(c) for c in self._conns)

    def _recv(self, conn: Any) -> Any:
        try:
            status, payload = conn.recv()
        except EOFError:  # the worker died without a word (e.g. it could not start)
            status, payload = "error", "the worker process exited"
        if status == "error":
            self.close()
            raise RuntimeError(f"collector worker failed: {payload}")
        return payload

    @property
    def n_envs(self) -> int:
        """Envs of all workers together."""
        return self._n_envs

    def collect(self, weights: dict[str, torch.Tensor], n_steps: int) -> Rollout:
        """Every worker runs `n_steps` with `weights`; the parts side by side, in worker order."""
        for c in self._conns:
            c.send(("collect", weights, n_steps))
        return Rollout.cat([self._recv(c) for c in self._conns])

    def call(self, name: str, *args: Any) -> list[Any]:
        """Run method `name(*args)` on every worker (between rollouts); their results in worker order."""
        for c in self._conns:
            c.send(("call", name, args))
        return [self._recv(c) for c in self._conns]

    def close(self) -> None:
        """Stop the worker processes."""
        for c in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                c.send(("close",))
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> ProcessCollector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Hosted:
    """What a Ray actor holds: the worker `local_fn(seed)`, on one torch thread."""

    def __init__(self, local_fn: LocalFn, seed: int) -> None:
        torch.set_num_threads(1)
        self.local = local_fn(seed)

    def size(self) -> int:
        """The worker's n_envs."""
        return int(self.local.n_envs)

    def collect(self, weights: dict[str, torch.Tensor], n_steps: int) -> Rollout:
        """The worker's rollout."""
        return self.local.collect(weights, n_steps)

    def call(self, name: str, args: tuple) -> Any:
        """The worker's method `name(*args)`."""
        return getattr(self.local, name)(*args)


class RayCollector:
    """`workers` LocalCollectors (or `local_fn` workers) as Ray actors (Ray installed and initialised)."""

    def __init__(self, env_fn: EnvFn | None, policy_fn: PolicyFn | None, workers: int = 2, seed: int = 0,
                 num_cpus: float = 1.0, *, local_fn: LocalFn | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError("RayCollector needs Ray: pip install 'moeplace[ray]'") from None
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        local_fn = _local_fn(env_fn, policy_fn, local_fn)
        self._ray = ray
        actor = ray.remote(num_cpus=num_cpus)(_Hosted)
        self._actors = [actor.remote(local_fn, seed + k) for k in range(workers)]
        self._n_envs = sum(ray.get([a.size.remote() for a in self._actors]))

    @property
    def n_envs(self) -> int:
        """Envs of all actors together."""
        return self._n_envs

    def collect(self, weights: dict[str, torch.Tensor], n_steps: int) -> Rollout:
        """Every actor runs `n_steps` with `weights` (put in the object store once); parts in actor order."""
        ref = self._ray.put(weights)
        return Rollout.cat(self._ray.get([a.collect.remote(ref, n_steps) for a in self._actors]))

    def call(self, name: str, *args: Any) -> list[Any]:
        """Run method `name(*args)` on every actor (between rollouts); their results in actor order."""
        return self._ray.get([a.call.remote(name, args) for a in self._actors])

    def close(self) -> None:
        """Stop the actors."""
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []

    def __enter__(self) -> RayCollector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_collector(kind: str, local_fn: LocalFn, workers: int = 2, seed: int = 0) -> Any:
    """A collector of `kind`: "local" (`local_fn(seed)` in this process, one worker), "process" or
    "ray" (`workers` of them; Ray is started here with `workers` CPUs unless already running).
    InputError (a one-line CLI error) when Ray is asked for and not installed."""
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise InputError("--collector ray: Ray is not installed (pip install 'moeplace[ray]')")
    if kind == "local":
        return local_fn(seed)
    if kind == "process":
        return ProcessCollector(None, None, workers=workers, seed=seed, local_fn=local_fn)
    if kind == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        return RayCollector(None, None, workers=workers, seed=seed, local_fn=local_fn)
    raise ValueError(f"collector must be one of {KINDS}, got {kind!r}")
