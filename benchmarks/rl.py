"""Policy-gradient figures: PPO on CartPole-v1 within 100k env steps, and the grid robot vs BFS.

    nice -n 10 .venv/bin/python benchmarks/rl.py            # full run (several minutes)
    nice -n 10 .venv/bin/python benchmarks/rl.py --seeds 1 --layouts 2   # a quick look
    nice -n 10 .venv/bin/python benchmarks/rl.py --workers 2              # runs in 2 processes

CartPole: tuned PPO (moeplace.rl.presets.CARTPOLE_PPO, 8 envs) for 100,000 env steps per seed,
then 20 greedy evaluation episodes; side by side, for seed 0, CleanRL's default PPO settings
(4 envs x 128 steps, lr 2.5e-4) and REINFORCE with the same step budget. Also reported: the
first env step at which the mean of the last 20 *training* episodes (sampled actions) reaches 475,
the measure behind "CleanRL's PPO takes ~500k steps". Grid robot: 10x10 grids
with 20% walls (random_layout seeds 0..9, resampled until the shortest path has >= 10
moves); one PPO policy trained per layout; its greedy path is compared with the breadth-first
shortest path and with a random legal walk. The last line is JSON.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import gymnasium as gym
import numpy as np
import torch

from moeplace.rl import PPO, REINFORCE, MLPPolicy, evaluate, make_vec_env, presets
from moeplace.rl.gridworld import GridWorldEnv, greedy_path, random_layout, shortest_path_length
from moeplace.utils import markdown_table, print_json_line, seed_everything

CARTPOLE_STEPS = 100_000
GRID_STEPS = 60_000
GRID_MIN_PATH = 10


def cartpole_run(algo_name: str, hp: dict, n_envs: int, seed: int) -> dict:
    """Train on CartPole-v1 for CARTPOLE_STEPS env steps and evaluate 20 greedy episodes."""
    seed_everything(seed)
    envs = make_vec_env(lambda: gym.make("CartPole-v1"), n_envs)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space)
    cls = PPO if algo_name.startswith("ppo") else REINFORCE
    algo = cls(policy, envs, seed=seed, **hp)
    start = time.perf_counter()
    algo.learn(CARTPOLE_STEPS, progress_bar=False)
    seconds = time.perf_counter() - start
    returns = evaluate(algo, gym.make("CartPole-v1"), n_episodes=20)
    return {"algo": algo_name, "seed": seed, "env_steps": algo.num_timesteps,
            "eval_mean_return": float(np.mean(returns)), "eval_min_return": float(np.min(returns)),
            "train_steps_to_475": steps_to_train_return(algo.episodes, 475.0),
            "seconds": round(seconds, 1), "steps_per_second": round(algo.num_timesteps / seconds, 1)}


def steps_to_train_return(episodes: list[tuple[int, float, int]], target: float) -> int | None:
    """First env step at which the mean of the last 20 (sampled, not greedy) training episodes >= target."""
    rets = [r for _, r, _ in episodes]
    for i in range(19, len(rets)):
        if np.mean(rets[i - 19:i + 1]) >= target:
            return episodes[i][0]
    return None


def random_walk_length(layout, seed: int, episodes: int = 20) -> float:
    """Mean moves of a uniformly random legal walk to the target (capped by the env's step limit)."""
    rng = np.random.default_rng(seed)
    env = GridWorldEnv(layout)
    lengths = []
    for _ in range(episodes):
        _, info = env.reset(seed=0)
        done = False
        while not done:
            legal = np.flatnonzero(info["action_mask"])
            _, _, term, trunc, info = env.step(int(rng.choice(legal)))
            done = term or trunc
        lengths.append(env.steps)
    return float(np.mean(lengths))


def grid_run(seed: int) -> dict:
    """Train PPO on random layout `seed` and compare the greedy path with BFS."""
    seed_everything(seed)
    layout = random_layout(10, 10, 0.2, seed=seed, min_path_length=GRID_MIN_PATH)
    envs = make_vec_env(lambda: GridWorldEnv(layout), presets.GRID_N_ENVS)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=presets.GRID_HIDDEN)
    algo = PPO(policy, envs, seed=seed, **presets.GRID_PPO)
    start = time.perf_counter()
    algo.learn(GRID_STEPS, progress_bar=False)
    seconds = time.perf_counter() - start
    path, reached = greedy_path(algo.predict, GridWorldEnv(layout))
    bfs = shortest_path_length(layout)
    return {"layout_seed": seed, "bfs": bfs, "learned": len(path) - 1 if reached else None,
            "equal": bool(reached and len(path) - 1 == bfs), "random_walk": random_walk_length(layout, seed),
            "env_steps": algo.num_timesteps, "seconds": round(seconds, 1)}


def _run_task(task: tuple) -> dict:
    """One benchmark run in a worker process (one torch thread: the networks are tiny)."""
    torch.set_num_threads(1)
    if task[0] == "cartpole":
        return cartpole_run(*task[1:])
    return grid_run(task[1])


def main() -> None:
    """Run both parts and print tables, ratios and the JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3, help="CartPole seeds for tuned PPO (default 3)")
    ap.add_argument("--layouts", type=int, default=10, help="grid layouts (default 10)")
    ap.add_argument("--no-baselines", action="store_true", help="skip the CartPole baselines")
    ap.add_argument("--workers", type=int, default=1,
                    help="runs in parallel processes (steps/s is then per process; default 1)")
    args = ap.parse_args()

    tasks: list[tuple] = [("cartpole", "ppo_tuned", presets.CARTPOLE_PPO, presets.CARTPOLE_N_ENVS, s)
                          for s in range(args.seeds)]
    if not args.no_baselines:
        tasks += [("cartpole", "ppo_cleanrl_defaults", {}, 4, 0),
                  ("cartpole", "reinforce", presets.CLASSIC_REINFORCE, 4, 0)]
    tasks += [("grid", s) for s in range(args.layouts)]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        results = []
        for task, result in zip(tasks, pool.imap(_run_task, tasks)):
            print(f"{task[0]} {result}", flush=True)
            results.append(result)
    rows = [r for t, r in zip(tasks, results) if t[0] == "cartpole" and t[1] == "ppo_tuned"]
    base = [r for t, r in zip(tasks, results) if t[0] == "cartpole" and t[1] != "ppo_tuned"]
    grid = [r for t, r in zip(tasks, results) if t[0] == "grid"]

    print("\nPPO on CartPole-v1, 100k env steps, 20 greedy evaluation episodes:\n")
    print(markdown_table(rows + base, floatfmt=".1f"))
    solved = sum(r["eval_mean_return"] >= 475 for r in rows)
    sps = float(np.mean([r["steps_per_second"] for r in rows]))
    if base:
        print(f"\ntuned PPO / CleanRL-default PPO eval return (seed 0): "
              f"{rows[0]['eval_mean_return'] / max(base[0]['eval_mean_return'], 1e-9):.2f}x")

    print("\nGrid robot 10x10, 20% walls: PPO greedy path vs BFS shortest path (one policy per layout):\n")
    print(markdown_table(grid, floatfmt=".1f"))
    equal = sum(r["equal"] for r in grid)
    walk_ratio = float(np.mean([r["random_walk"] / r["bfs"] for r in grid]))
    print(f"\nrandom legal walk / BFS path length: {walk_ratio:.1f}x; learned == BFS on {equal}/{len(grid)}")

    print_json_line({
        "cartpole_ppo_seeds_solved": solved, "cartpole_ppo_seeds": len(rows),
        "cartpole_ppo_eval_mean_returns": [r["eval_mean_return"] for r in rows],
        "cartpole_env_steps": CARTPOLE_STEPS, "cartpole_ppo_steps_per_second": round(sps, 1),
        "cartpole_ppo_train_steps_to_475": [r["train_steps_to_475"] for r in rows],
        "cartpole_baselines": {r["algo"]: r["eval_mean_return"] for r in base},
        "cartpole_baselines_train_steps_to_475": {r["algo"]: r["train_steps_to_475"] for r in base},
        "grid_layouts_equal_bfs": equal, "grid_layouts": len(grid),
        "grid_random_walk_over_bfs": round(walk_ratio, 2), "grid_env_steps_per_layout": GRID_STEPS,
        "grid_bfs_lengths": [r["bfs"] for r in grid],
    })


if __name__ == "__main__":
    main()
