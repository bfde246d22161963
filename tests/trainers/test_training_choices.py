"""benchmarks/training_choices.py: the sampled choice per round, and what ReST's own filter keeps of it."""

import importlib.util
import json
from pathlib import Path

import pytest

from arena.config import load_config
from arena.records import Episode, Matchup, Turn

ROOT = Path(__file__).parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("training_choices", ROOT / "benchmarks" / "training_choices.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _episode(n: int, seed: int, known: bool, search: bool, right: bool, helper_search: bool = False) -> Episode:
    seats = {"asker": "main", "helper_0": "main", "helper_1": "main"}
    matchup = Matchup(game="collab_qa-v0", seed=seed, seats=seats, game_kwargs={})
    moves = (["SEARCH: where was X born?"] if search else []) + ["ANSWER: Ulm"]
    turns = [
        Turn(index=i, player="asker", policy_id="main", observation="o", action=a, prompt_ids=[1, 2], completion_ids=[3, 4], logprobs=[-0.1, -0.2])
        for i, a in enumerate(moves)
    ]
    ret = (1.0 if right else 0.0) - 0.25 * (search + helper_search)
    metrics = {"known": float(known), "searches/asker": float(search), "searches/helper_0": float(helper_search), "searches/helper_1": 0.0}
    return Episode(episode_id=f"e{n}", matchup=matchup, turns=turns, returns=dict.fromkeys(seats, ret), group_return=ret, metrics=metrics)


def _run(tmp_path: Path, recipe: str) -> Path:
    cfg = load_config(str(ROOT / "configs" / "collab_qa_asker_tool.yaml"), [f"trainer.recipe={recipe}"])
    run = tmp_path / recipe
    (run / "checkpoints" / "round_00002").mkdir(parents=True)
    (run / "checkpoints" / "round_00002" / "state.json").write_text(json.dumps({"config": cfg.model_dump(mode="json")}))
    rows = []
    # a known fact: two seats answered from memory (1.0), six searched (0.75): the two answers are kept
    rows += [("collab_qa_compounds", (1, True, i >= 2, True)) for i in range(8)]
    # an unknown fact: three searched and read right (0.75), five answered wrong (0): two searches kept
    rows += [("collab_qa_compounds", (2, False, i < 3, i < 3)) for i in range(8)]
    # an unknown fact where every asker searched and read right, and one helper searched too: that
    # episode paid two searches (0.5), so the others (0.75) beat the group's worst and two are kept
    rows += [("collab_qa_people", (3, False, True, True, i == 0)) for i in range(8)]
    # an unknown fact where every seat searched and read right: alike, nothing kept
    rows += [("collab_qa_people", (4, False, True, True)) for i in range(8)]
    lines = [json.dumps({"entry": entry, "episode": json.loads(_episode(n, *args).to_json())}) for n, (entry, args) in enumerate(rows)]
    (run / "episodes" / "train").mkdir(parents=True)
    (run / "episodes" / "train" / "round_00000.jsonl").write_text("\n".join(lines) + "\n")
    return run


def test_training_choices_counts_the_sampled_choice_and_what_the_rest_filter_keeps(tmp_path):
    bench = _bench()
    out = bench.choices(_run(tmp_path, "rest"))
    (only,) = out["rounds"]
    comp, people = only["entries"]["collab_qa_compounds"], only["entries"]["collab_qa_people"]
    assert (comp["episodes"], comp["asker_search_known"], comp["asker_search_unknown"], comp["helper_search"]) == (16, 0.75, 0.375, 0.0)
    assert comp["kept"] == {"known:ANSWER": 2, "unknown:SEARCH": 2} and comp["groups_kept"] == "2/2"
    assert (people["asker_search_known"], people["asker_search_unknown"], people["helper_search"]) == (None, 1.0, 0.0625)
    assert people["kept"] == {"unknown:SEARCH": 2} and people["groups_kept"] == "1/2"
    assert comp["group_return"] == pytest.approx((2 * 1.0 + 6 * 0.75 + 3 * 0.75) / 16, abs=1e-4)  # rounded to 4 places


def test_training_choices_without_rest_reports_no_filter_and_refuses_a_directory_that_is_no_run(tmp_path):
    bench = _bench()
    out = bench.choices(_run(tmp_path, "pg"))
    comp = out["rounds"][0]["entries"]["collab_qa_compounds"]
    assert out["recipe"] == "pg" and "kept" not in comp and comp["asker_search_known"] == 0.75
    with pytest.raises(SystemExit, match="no checkpoints"):
        bench.choices(tmp_path)
