"""`moeplace rl ...`: outputs, files written, and one-line errors with exit code 2."""

import json

from moeplace.cli import main


def test_gridworld_layout_file_writes_pngs_and_json(tmp_path, capsys):
    lay = tmp_path / "maze.txt"
    lay.write_text("S.#\n..T\n")
    out = tmp_path / "run"
    assert main(["rl", "gridworld", "--layout", str(lay), "--steps", "3000", "--out", str(out),
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["bfs_path_length"] == 3 and result["rows"] == 2 and result["cols"] == 3
    assert result["env_steps"] <= 3000
    for name in ("gridworld.png", "learning_curve.png", "policy.safetensors", "policy.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "gridworld.png").read_bytes()[:4] == b"\x89PNG"


def test_gridworld_text_output_shows_grid_and_bfs(tmp_path, capsys):
    assert main(["rl", "gridworld", "--size", "4x5", "--walls", "0.1", "--steps", "1024",
                 "--out", str(tmp_path), "--algo", "reinforce"]) == 0
    text = capsys.readouterr().out
    assert "BFS shortest path:" in text and "S" in text and "T" in text
    grid_lines = [line for line in text.splitlines() if set(line) <= set("#.ST*") and line]
    assert len(grid_lines) == 4 and all(len(line) == 5 for line in grid_lines)


def test_bad_layout_file_is_one_line_error(tmp_path, capsys):
    lay = tmp_path / "bad.txt"
    lay.write_text("S..\n.?.\n..T\n")
    assert main(["rl", "gridworld", "--layout", str(lay), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.txt:2" in err and "'?'" in err


def test_train_errors(capsys):
    assert main(["rl", "train", "--env", "NoSuchEnv-v0"]) == 2
    assert "unknown Gymnasium environment 'NoSuchEnv-v0'" in capsys.readouterr().err
    assert main(["rl", "train", "--env", "MountainCarContinuous-v0"]) == 2
    assert "only Discrete action spaces" in capsys.readouterr().err
    assert main(["rl", "train", "--env", "CartPole-v1", "--steps", "0"]) == 2


def test_train_save_and_resume(tmp_path, capsys):
    ckpt = tmp_path / "cp"
    assert main(["rl", "train", "--env", "CartPole-v1", "--steps", "512", "--eval-episodes", "2",
                 "--save", str(ckpt), "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["eval_episodes"] == 2 and (tmp_path / "cp.png").exists()
    assert main(["rl", "train", "--env", "CartPole-v1", "--steps", "512", "--eval-episodes", "1",
                 "--resume", str(ckpt) + ".safetensors", "--json"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert second["env_steps"] == first["env_steps"] + 512


def test_ctrl_c_saves_what_was_learned(tmp_path, monkeypatch, capsys):
    from moeplace.rl import PPO

    real_learn = PPO.learn

    def interrupted_learn(self, total_timesteps, callback=None, progress_bar=True):
        def stop(algo, stats):
            if algo.num_timesteps >= 1024:
                raise KeyboardInterrupt
        return real_learn(self, total_timesteps, callback=stop, progress_bar=False)

    monkeypatch.setattr(PPO, "learn", interrupted_learn)
    out = tmp_path / "run"
    assert main(["rl", "gridworld", "--size", "5", "--out", str(out), "--json"]) == 130
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["interrupted"] and 1024 <= result["env_steps"] < 60_000
    assert (out / "policy.safetensors").exists() and (out / "gridworld.png").exists()
