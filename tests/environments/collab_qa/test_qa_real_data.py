"""Real data in collab_qa: JSONL questions and corpora written here, played through `arena run`; a malformed
line stops the run before anything starts (exit 2) naming the file, the line and the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import arena_in_process

ARENA = str(Path(sys.executable).with_name("arena"))


def _write_data(root: Path) -> Path:
    (root / "corpora").mkdir(parents=True)
    questions = [
        {"id": "q1", "question": "Which river flows through Lorvik?", "answers": ["Sella"], "split": "test", "domain": "wiki"},
        {"id": "q2", "question": "Which enzyme does ketrazol block?", "answers": ["MAO-B"], "split": "test", "domain": "med"},
        {"id": "q3", "question": "Who founded Lorvik?", "answers": ["Ivo Dunn"], "split": "test", "domain": "wiki"},
        {"id": "q4", "question": "What does tamsiline treat?", "answers": ["gout"], "split": "train", "domain": "med"},
    ]
    wiki = [
        {"id": "w1", "title": "Lorvik", "text": "The Sella river flows through Lorvik. Lorvik was founded by Ivo Dunn."},
        {"id": "w2", "title": "Bergen", "text": "Bergen is a city on the coast."},
    ]
    med = [
        {"id": "m1", "title": "Ketrazol", "text": "Ketrazol is an inhibitor that blocks MAO-B in the brain."},
        {"id": "m2", "title": "Tamsiline", "text": "Tamsiline is used to treat gout."},
    ]
    for name, rows in [("questions.jsonl", questions), ("corpora/wiki.jsonl", wiki), ("corpora/med.jsonl", med)]:
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _config(path: Path, data: Path) -> Path:
    seats = {"asker": "scripted/always_search", "helper_0": "scripted/always_search", "helper_1": "scripted/always_search"}
    cfg = {
        "name": "real_data",
        "episodes_per_matchup": 6,
        "trainer": {"recipe": "none"},
        "games": [
            {"id": "collab_qa-v0", "name": "collaborative", "kwargs": {"data_dir": str(data), "split": "test"}, "matchups": [seats]},
            {
                "id": "collab_qa-v0",
                "name": "isolated_wiki",
                "matchups": [{"asker": "scripted/always_search"}],
                "kwargs": {"data_dir": str(data), "split": "test", "helpers": 0, "asker_tool": "wiki", "domain": "wiki"},
            },
        ],
        "tracking": {"traces_per_round": 4},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(cwd: Path) -> dict[str, str]:
    # wide enough that the error's long path is not wrapped
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", "ARENA_HOME": str(cwd / "home"), "COLUMNS": "1000"}


def _arena(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([ARENA, *args], cwd=cwd, env={**os.environ, **_env(cwd)}, capture_output=True, text=True, timeout=300)


def test_arena_run_plays_questions_and_corpora_from_jsonl(tmp_path):
    import mlflow

    data = _write_data(tmp_path / "data")
    out = _arena(["run", str(_config(tmp_path / "c.yaml", data))], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "collaborative" in out.stdout and "isolated_wiki" in out.stdout
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["arena"], output_format="list")[0]
    m = run.data.metrics
    # the bots search the real corpora with BM25 and read answers off the documents they find
    assert m["qa/isolated_wiki/before/searches"] == 1.0 and m["qa/isolated_wiki/before/n"] == 6
    assert m["qa/isolated_wiki/before/f1"] > 0 and m["qa/collaborative/before/searches"] >= 1.0
    assert m["qa/collaborative/before/abstained"] < 1.0
    results = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/qa_eval/run_results.json")
    assert len(results) == 12 and {r["split"] for r in results} == {"collaborative", "isolated_wiki"}


def test_a_malformed_line_exits_2_naming_file_line_and_field(tmp_path):
    data = _write_data(tmp_path / "data")
    config = _config(tmp_path / "c.yaml", data)
    lines = (data / "corpora" / "med.jsonl").read_text().splitlines()
    (data / "corpora" / "med.jsonl").write_text("\n".join([lines[0], '{"id": "m2", "title": "Tamsiline"}', *lines[1:]]) + "\n")
    out = arena_in_process("run", str(config), cwd=tmp_path, env=_env(tmp_path))
    assert out.returncode == 2, out.stderr[-3000:]
    message = " ".join(out.stderr.split())
    assert "med.jsonl:2" in message and "field 'text'" in message
    assert not (tmp_path / "arena_runs").exists()  # failed before anything started

    # a question line with a misspelt key: named too
    data2 = _write_data(tmp_path / "data2")
    with (data2 / "questions.jsonl").open("a") as f:
        f.write('{"id": "q9", "question": "Who?", "answer": ["x"]}\n')
    out = arena_in_process("run", str(_config(tmp_path / "c2.yaml", data2)), cwd=tmp_path, env=_env(tmp_path))
    assert out.returncode == 2
    message = " ".join(out.stderr.split())
    assert "questions.jsonl:5" in message and "answer" in message
