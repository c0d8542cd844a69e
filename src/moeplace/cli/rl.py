"""`moeplace rl gridworld|train`: train the grid robot, or any discrete-action Gymnasium env.

    moeplace rl gridworld --size 10 --walls 0.2 --algo ppo --steps 60000 --out runs/grid
    moeplace rl gridworld --layout maze.txt --algo reinforce
    moeplace rl train --env CartPole-v1 --algo ppo --steps 100000 --save runs/cartpole
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from moeplace.cli.args import fraction_below_one, nonneg_int, positive_int
from moeplace.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    """Register the rl subcommands."""
    g = sub.add_parser("gridworld", help="train the grid robot and compare its path with BFS",
                       description="Train a policy on one grid layout (random or from a file), print "
                       "its greedy path against the breadth-first shortest path, write PNGs.")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--layout", metavar="FILE",
                     help="layout file: '#' wall, 'S' start, 'T' target, '.' free")
    src.add_argument("--size", default=None, help="random grid size: N or NxM (default 10)")
    g.add_argument("--walls", type=fraction_below_one, default=None,
                   help="random grid wall fraction (default 0.2)")
    g.add_argument("--min-path", type=nonneg_int, default=None,
                   help="random grid: resample until the shortest path has at least this many moves "
                   "(default (rows + cols) / 2)")
    g.add_argument("--algo", choices=["ppo", "reinforce"], default="ppo")
    g.add_argument("--steps", type=positive_int, default=None,
                   help="environment steps to train (default 60000 for ppo, 150000 for reinforce)")
    g.add_argument("--seed", type=nonneg_int, default=0, help="seed of the layout, network and training")
    g.add_argument("--out", default="runs/gridworld", help="folder for PNGs and the checkpoint")
    g.add_argument("--json", action="store_true", help="print only one JSON line of results")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (default: refuse to touch its files)")
    g.set_defaults(func=cmd_gridworld)

    t = sub.add_parser("train", help="train PPO/REINFORCE on a Gymnasium env with discrete actions",
                       description="Train an MLP policy on any registered Gymnasium environment with "
                       "a Discrete action space, then evaluate it greedily.")
    t.add_argument("--env", required=True, help="Gymnasium env id, e.g. CartPole-v1, Acrobot-v1")
    t.add_argument("--algo", choices=["ppo", "reinforce"], default="ppo")
    t.add_argument("--steps", type=positive_int, default=100_000, help="environment steps (default 100000)")
    t.add_argument("--n-envs", type=positive_int, default=None,
                   help="parallel envs (default: 8 ppo, 4 reinforce)")
    t.add_argument("--eval-episodes", type=positive_int, default=20,
                   help="greedy evaluation episodes (default 20)")
    t.add_argument("--seed", type=nonneg_int, default=0)
    t.add_argument("--save", metavar="PATH", help="write the checkpoint (PATH.safetensors + .json) "
                   "and the learning curve (PATH.png)")
    t.add_argument("--resume", metavar="CKPT", help="continue training from a checkpoint of --save")
    t.add_argument("--json", action="store_true", help="print only one JSON line of results")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing checkpoint at --save (default: refuse, unless it is --resume's)")
    t.set_defaults(func=cmd_train)


def _parse_size(text: str | None) -> tuple[int, int]:
    if text is None:
        return 10, 10
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise InputError(f"--size: expected N or NxM, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise InputError(f"--size: expected N or NxM with positive numbers, got {text!r}")
    return parts[0], parts[1]


GRID_FILES = ("policy.safetensors", "policy.json", "gridworld.png", "learning_curve.png")


def _claim_save(save: str, resume: str | None, overwrite: bool) -> None:
    """Refuse to overwrite another run's checkpoint at --save (continuing it with --resume is fine)."""
    from moeplace.runs import claim_run_dir

    target = Path(save)
    stem = target.with_suffix("") if target.suffix == ".safetensors" else target
    same = resume is not None and Path(resume).with_suffix("").resolve() == stem.resolve()
    names = [stem.name + ext for ext in (".safetensors", ".json", ".png")]
    claim_run_dir(stem.parent, names, resume=same and not overwrite, overwrite=overwrite, flag="--save")


def _train(algo: Any, steps: int) -> bool:
    """Run learn; on Ctrl-C keep what was learned and report it (True when interrupted)."""
    try:
        algo.learn(steps)
        return False
    except KeyboardInterrupt:
        import sys

        print(f"\ninterrupted after {algo.num_timesteps} env steps; saving what was learned",
              file=sys.stderr)
        return True


def cmd_gridworld(args: argparse.Namespace) -> int:
    """Train on one layout, print the path against BFS, write PNGs and a checkpoint."""
    import torch

    from moeplace.rl import PPO, REINFORCE, MLPPolicy, make_vec_env, presets
    from moeplace.rl.gridworld import GridWorldEnv, greedy_path, load_layout, random_layout, shortest_path
    from moeplace.rl.plots import plot_grid_path, plot_learning_curve
    from moeplace.utils import print_json_line, seed_everything

    if args.steps is None:
        args.steps = presets.GRID_STEPS[args.algo]
    if args.layout and (args.walls is not None or args.min_path is not None):
        raise InputError("--walls/--min-path: only for random layouts, not with --layout")
    from moeplace.runs import claim_run_dir

    claim_run_dir(args.out, GRID_FILES, overwrite=args.overwrite)
    seed_everything(args.seed)
    torch.set_num_threads(1)
    if args.layout:
        layout, source = load_layout(args.layout), args.layout
    else:
        rows, cols = _parse_size(args.size)
        wall_fraction = 0.2 if args.walls is None else args.walls
        min_path = (rows + cols) // 2 if args.min_path is None else args.min_path
        layout = random_layout(rows, cols, wall_fraction, seed=args.seed, min_path_length=min_path)
        source = f"random {rows}x{cols}, {wall_fraction:g} walls, seed {args.seed}, path >= {min_path}"
    envs = make_vec_env(lambda: GridWorldEnv(layout), presets.GRID_N_ENVS)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=presets.GRID_HIDDEN)
    cls, hp = (PPO, presets.GRID_PPO) if args.algo == "ppo" else (REINFORCE, presets.GRID_REINFORCE)
    algo = cls(policy, envs, seed=args.seed, **hp)
    start = time.perf_counter()
    interrupted = _train(algo, args.steps)
    seconds = time.perf_counter() - start

    out = Path(args.out)
    ckpt = algo.save(out / "policy")
    path, reached = greedy_path(algo.predict, GridWorldEnv(layout))
    best = shortest_path(layout)
    learned, shortest = len(path) - 1, len(best) - 1
    title = f"{args.algo}: greedy {learned if reached else 'fails'} vs BFS {shortest} moves"
    plot_grid_path(layout, path, out / "gridworld.png", shortest=best, title=title)
    plot_learning_curve(algo.episodes, out / "learning_curve.png", title=f"grid robot, {args.algo}")
    result = {
        "layout": source, "rows": layout.shape[0], "cols": layout.shape[1], "walls": int(layout.walls.sum()),
        "algo": args.algo, "seed": args.seed, "env_steps": algo.num_timesteps,
        "seconds": round(seconds, 2), "steps_per_second": round(algo.num_timesteps / max(seconds, 1e-9), 1),
        "reached_target": reached, "learned_path_length": learned if reached else None,
        "bfs_path_length": shortest, "optimal": bool(reached and learned == shortest),
        "interrupted": interrupted, "checkpoint": str(ckpt),
        "grid_png": str(out / "gridworld.png"), "curve_png": str(out / "learning_curve.png"),
    }
    if args.json:
        print_json_line(result)
    else:
        print(f"layout: {source}")
        print(f"trained {args.algo} for {algo.num_timesteps} env steps in {seconds:.1f} s "
              f"({result['steps_per_second']:.0f} steps/s)")
        print(layout.to_text(path[1:-1] if reached else path[1:]))
        verdict = "optimal" if result["optimal"] else ("longer than BFS" if reached else "target NOT reached")
        print(f"greedy path: {learned if reached else '-'} moves; BFS shortest path: {shortest} moves "
              f"({verdict})")
        print(f"wrote {result['grid_png']}, {result['curve_png']}, {ckpt}")
    return 130 if interrupted else 0


def _make_env(env_id: str) -> Any:
    """gym.make with user errors for unknown ids and non-discrete action spaces."""
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        raise InputError(f"--env: unknown Gymnasium environment {env_id!r} ({e})") from None
    except ModuleNotFoundError as e:
        raise InputError(f"--env: {env_id!r} needs a package that is not installed ({e.name})") from None
    if not isinstance(env.action_space, gym.spaces.Discrete):
        env.close()
        raise InputError(f"--env: {env_id} has action space {env.action_space}; "
                         "only Discrete action spaces are supported")
    return env


def cmd_train(args: argparse.Namespace) -> int:
    """Train PPO or REINFORCE with an MLP policy on a Gymnasium env id, evaluate greedily, save."""
    import numpy as np
    import torch

    from moeplace.rl import PPO, REINFORCE, MLPPolicy, evaluate, make_vec_env, presets
    from moeplace.rl.plots import plot_learning_curve
    from moeplace.utils import print_json_line, seed_everything

    if args.save:
        _claim_save(args.save, args.resume, args.overwrite)
    seed_everything(args.seed)
    torch.set_num_threads(1)
    eval_env = _make_env(args.env)
    hp, n_envs = presets.defaults_for(args.algo, args.env)
    n_envs = args.n_envs or n_envs
    envs = make_vec_env(lambda: _make_env(args.env), n_envs)
    try:
        policy = MLPPolicy(envs.single_observation_space, envs.single_action_space)
    except ValueError as e:
        raise InputError(f"--env: {args.env}: {e}") from None
    cls = PPO if args.algo == "ppo" else REINFORCE
    if args.resume:
        algo = cls.load(args.resume, policy, env=envs)
    else:
        algo = cls(policy, envs, seed=args.seed, **hp)
    start_steps, start = algo.num_timesteps, time.perf_counter()
    interrupted = _train(algo, args.steps)
    seconds = time.perf_counter() - start
    returns = [] if interrupted else evaluate(algo, eval_env, n_episodes=args.eval_episodes)
    result = {
        "env": args.env, "algo": args.algo, "seed": args.seed, "n_envs": n_envs,
        "env_steps": algo.num_timesteps, "seconds": round(seconds, 2),
        "steps_per_second": round((algo.num_timesteps - start_steps) / max(seconds, 1e-9), 1),
        "train_mean_return_last20": algo.recent_return(),
        "eval_episodes": len(returns),
        "eval_mean_return": float(np.mean(returns)) if returns else None,
        "eval_std_return": float(np.std(returns)) if returns else None,
        "interrupted": interrupted,
    }
    if args.save:
        ckpt = algo.save(args.save)
        curve = Path(args.save).with_suffix(".png")
        plot_learning_curve(algo.episodes, curve, title=f"{args.env}, {args.algo}")
        result |= {"checkpoint": str(ckpt), "curve_png": str(curve)}
    if args.json:
        print_json_line(result)
    else:
        print(f"{args.env}: {args.algo} for {algo.num_timesteps} env steps in {seconds:.1f} s "
              f"({result['steps_per_second']:.0f} steps/s)")
        print(f"training return (mean of last 20 episodes): {result['train_mean_return_last20']:.2f}")
        if returns:
            print(f"greedy evaluation over {len(returns)} episodes: mean {result['eval_mean_return']:.2f} "
                  f"(std {result['eval_std_return']:.2f})")
        if args.save:
            print(f"wrote {result['checkpoint']}, {result['curve_png']}")
    return 130 if interrupted else 0
