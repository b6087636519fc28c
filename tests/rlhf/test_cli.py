import json

from conftest import separable_pairs

from rlhf.data import read_jsonl, write_jsonl


def test_train_reward_then_train_policy_cli(tiny_model_path, tmp_path, capsys):
    from rlhf.train_policy import main as train_policy
    from rlhf.train_reward import main as train_reward

    write_jsonl(separable_pairs(6, 2), tmp_path / "pairs.jsonl")
    assert train_reward(["--data", str(tmp_path / "pairs.jsonl"), "--base", tiny_model_path, "--out", str(tmp_path / "rm"),
                         "--epochs", "1", "--lr", "1e-3", "--no-margin"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "eval/reward/accuracy" in lines[-1]["final"]
    meta = json.loads((tmp_path / "rm" / "meta.json").read_text())
    assert meta["config"]["margin"] is False and len(meta["dataset_sha256"]) == 64

    write_jsonl([{"prompt": r["prompt"]} for r in read_jsonl(tmp_path / "pairs.jsonl")[:4]], tmp_path / "p.jsonl")
    assert train_policy(["--prompts", str(tmp_path / "p.jsonl"), "--policy", tiny_model_path, "--ref", tiny_model_path,
                         "--reward", str(tmp_path / "rm"), "--out", str(tmp_path / "pol"), "--num-iterations", "1",
                         "--k", "2", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "policy/kl" in json.loads(out[-1])["final"]
    assert (tmp_path / "pol" / "model.safetensors").is_file()
