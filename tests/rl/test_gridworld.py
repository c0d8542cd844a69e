"""The grid robot: Gymnasium conformance, BFS against an independent shortest-path solver, layout
files and their errors, random solvable layouts, and PPO learning a shortest path."""

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph
import torch
from gymnasium.utils.env_checker import check_env

from moeplace.errors import InputError
from moeplace.rl import PPO, MLPPolicy, make_vec_env
from moeplace.rl.gridworld import (
    GridWorldEnv,
    Layout,
    greedy_path,
    load_layout,
    parse_layout,
    random_layout,
    shortest_path,
    shortest_path_length,
)


def _reference_distance(layout: Layout):
    """Shortest-path length by scipy's Dijkstra on the grid graph (an independent solver)."""
    rows, cols = layout.shape
    idx = lambda r, c: r * cols + c  # noqa: E731
    src, dst = [], []
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((1, 0), (0, 1)):
                if layout.free((r, c)) and layout.free((r + dr, c + dc)):
                    src.append(idx(r, c))
                    dst.append(idx(r + dr, c + dc))
    graph = scipy.sparse.coo_matrix((np.ones(len(src)), (src, dst)), shape=(rows * cols,) * 2)
    dist = scipy.sparse.csgraph.shortest_path(graph, directed=False, unweighted=True,
                                              indices=idx(*layout.start))
    d = dist[idx(*layout.target)]
    return None if np.isinf(d) else int(d)


def test_check_env_passes():
    check_env(GridWorldEnv(random_layout(6, 7, 0.2, seed=1)), skip_render_check=True)
    check_env(GridWorldEnv(rows=5, cols=5), skip_render_check=True)  # a fresh layout per reset


@pytest.mark.parametrize("seed", range(12))
def test_bfs_matches_dijkstra_and_random_layouts_are_solvable(seed):
    layout = random_layout(8, 9, 0.3, seed=seed, min_path_length=seed)
    assert layout.walls.sum() == round(0.3 * 72)
    assert not layout.walls[layout.start] and not layout.walls[layout.target]
    path = shortest_path(layout)
    assert path is not None and path[0] == layout.start and path[-1] == layout.target
    assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 and layout.free(b) for a, b in zip(path, path[1:]))
    assert len(path) - 1 == _reference_distance(layout) >= seed


def test_impossible_min_path_is_an_input_error():
    with pytest.raises(InputError, match="at least 5 moves"):
        random_layout(2, 2, 0.0, seed=0, min_path_length=5, max_tries=20)


def test_unreachable_target():
    walls = np.zeros((3, 3), dtype=bool)
    walls[1, :] = True
    layout = Layout(walls, (0, 0), (2, 2))
    assert shortest_path(layout) is None and _reference_distance(layout) is None


def test_parse_layout_and_round_trip():
    text = "S.#.\n..#T\n....\n"
    layout = parse_layout(text)
    assert layout.shape == (3, 4) and layout.start == (0, 0) and layout.target == (1, 3)
    assert layout.walls.tolist() == [[False, False, True, False], [False, False, True, False],
                                     [False] * 4]
    again = parse_layout(layout.to_text())
    assert layout.to_text() == text.strip()
    assert np.array_equal(again.walls, layout.walls) and (again.start, again.target) == ((0, 0), (1, 3))
    assert shortest_path_length(layout) == 6


@pytest.mark.parametrize("text, message", [
    ("S..\n.x.\n..T\n", r"lay.txt:2: unexpected character 'x' in column 2"),
    ("S..\n..\n..T\n", r"lay.txt:2: row has 2 cells, expected 3"),
    ("S..\n.S.\n..T\n", r"lay.txt:2: second start 'S' \(first on line 1\)"),
    ("S.T\n...\n..T\n", r"lay.txt:3: second target 'T'"),
    ("...\n..T\n", r"lay.txt: no start 'S'"),
    ("S..\n...\n", r"lay.txt: no target 'T'"),
    ("S..\n###\n..T\n", r"lay.txt:3: target 'T' cannot be reached"),
    ("\n\n", r"lay.txt: empty layout"),
])
def test_bad_layout_files_name_file_and_line(tmp_path, text, message):
    f = tmp_path / "lay.txt"
    f.write_text(text)
    with pytest.raises(InputError, match=message):
        load_layout(f)


def test_missing_layout_file(tmp_path):
    with pytest.raises(InputError, match="nope.txt: cannot read layout"):
        load_layout(tmp_path / "nope.txt")


def test_dynamics_rewards_masks_and_step_limit():
    env = GridWorldEnv(parse_layout("S#\n.T\n"), step_cost=-0.1, target_reward=1.0, max_steps=3)
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (3, 2, 2) and obs["image"][1, 0, 0] == 1 and obs["image"][2, 1, 1] == 1
    assert info["action_mask"].tolist() == [False, True, False, False]  # only 'down' is legal
    obs, r, term, trunc, info = env.step(1)
    assert env.pos == (1, 0) and r == pytest.approx(-0.1) and not term and not trunc
    assert obs["position"].tolist() == [1.0, 0.0]
    obs, r, term, trunc, _ = env.step(3)
    assert term and not trunc and r == pytest.approx(0.9)
    # Unmasked: bumping into a wall stays in place and the episode is truncated at max_steps.
    env = GridWorldEnv(parse_layout("S#\n.T\n"), max_steps=2, mask_walls=False)
    env.reset(seed=0)
    assert env.step(3)[0]["position"].tolist() == [0.0, 0.0]
    _, _, term, trunc, _ = env.step(0)
    assert trunc and not term


def test_ppo_learns_shortest_path_on_small_layout():
    layout = parse_layout("S..#.\n.#...\n.#.#.\n...#T\n")
    envs = make_vec_env(lambda: GridWorldEnv(layout), 4)
    torch.manual_seed(0)
    policy = MLPPolicy(envs.single_observation_space, envs.single_action_space, hidden=(64,))
    algo = PPO(policy, envs, n_steps=32, n_epochs=4, learning_rate=3e-3, gamma=0.95, seed=0)
    algo.learn(8000, progress_bar=False)
    path, reached = greedy_path(algo.predict, GridWorldEnv(layout))
    assert reached and len(path) - 1 == shortest_path_length(layout) == 7
