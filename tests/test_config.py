import pytest

from arena.config import ConfigError, RunConfig, load_config


def test_embedded_default_is_the_collab_qa_quick_start_and_its_file_spells_it_out():
    from pathlib import Path

    from arena.environments.collab_qa.knowledge import KnowledgeConfig

    cfg = load_config()
    assert cfg == load_config(Path(__file__).parent.parent / "configs" / "collab_qa.yaml")
    assert {g.id for g in cfg.games} == {"collab_qa-v0"} and isinstance(cfg.model.warm_start, KnowledgeConfig)
    trained = [g for g in cfg.games if not g.eval_only]
    assert len(trained) == 1 and set(trained[0].matchups[0].values()) == {"main"}  # collaborative self-play
    isolated = [g for g in cfg.games if g.eval_only and g.kwargs.get("helpers") == 0]
    assert {g.kwargs["asker_tool"] for g in isolated} == {"people", "compounds"}  # the transfer, evaluated only
    assert cfg.trainer.recipe == "pg" and cfg.trainer.rounds > 0
    # overrides apply on top of the default, as on top of a file
    assert load_config(None, ["trainer.recipe=rest"]).trainer.recipe == "rest"
    assert load_config(None, ["trainer.rounds=1"]).games == cfg.games


def test_yaml_and_dotted_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nsampling:\n  temperature: 0.5\ngames:\n  - id: negotiation-v0\n    matchups: [{seller: main, buyer: random}]\n")
    cfg = load_config(path, ["sampling.max_new_tokens=7", "tracking.experiment=abc", "seed=4"])
    assert (cfg.seed, cfg.sampling.temperature, cfg.sampling.max_new_tokens, cfg.tracking.experiment) == (4, 0.5, 7, "abc")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["trainer.nonsense=1"], "unknown config key 'trainer.nonsense'"),
        (["sampling.nonsense=1"], "unknown config key 'sampling.nonsense'"),
        (["sampling.temperature=-1"], "sampling.temperature"),
        (["rollout.concurrency=many"], "rollout.concurrency"),
        (["seed"], "key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_config(None, overrides)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


@pytest.mark.parametrize(
    "games, expected",
    [
        ([{"id": "chess-v0", "matchups": [{"a": "main"}]}], "unknown game id 'chess-v0'"),
        ([{"id": "negotiation-v0", "matchups": [{"seller": "main"}]}], "exactly the players"),
        ([{"id": "negotiation-v0", "matchups": [{"seller": "main", "buyer": "scripted/tit_for_tat"}]}], "no scripted bot 'tit_for_tat'"),
        ([{"id": "negotiation-v0", "kwargs": {"cost": 50}, "matchups": [{"seller": "main", "buyer": "random"}]}], "bad kwargs"),
    ],
)
def test_bad_games_fail_before_any_work(tmp_path, games, expected):
    import yaml

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"games": games}))
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_shipped_configs_validate():
    from pathlib import Path

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert configs, "configs/ holds at least the default experiment"
    for path in configs:
        load_config(path)


def test_a_config_must_name_its_games(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\n")
    with pytest.raises(ConfigError, match="'games'"):
        load_config(path)


def test_selfplay_yaml_spells_out_the_field_defaults():
    from pathlib import Path

    cfg = load_config(Path(__file__).parent.parent / "configs" / "selfplay.yaml")
    assert cfg == RunConfig(games=cfg.games)
    assert {g.id for g in cfg.games} == {"repeated_matrix-v0", "negotiation-v0"}
    assert any("main" in seats.values() for g in cfg.games for seats in g.matchups)


def test_a_game_listed_twice_needs_names():
    games = [{"id": "negotiation-v0", "matchups": [{"seller": "random", "buyer": "random"}]}] * 2
    with pytest.raises(ConfigError, match="distinct `name`"):
        load_config(None, [f"games={games}"])


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.path=/nonexistent/model"], "model.path': no such model directory"),
        (["model.path=./models/none"], "model.path': no such model directory"),
        (["model.path=not a hub id!"], "model.path"),
        (["model.warm_start={recipe: telepathy}"], "unknown warm-start recipe 'telepathy'"),
        (["model.warm_start={recipe: imitation, stepz: 3}"], "stepz"),
        (["imports=[no_such_module_here]"], "imports': cannot import 'no_such_module_here'"),
        (["trainer.recipe=magic"], "unknown name 'magic'"),
        (["trainer.replay_coef=0.5", "model.warm_start=null"], "trainer.replay_coef replays what the warm start taught: it needs model.warm_start"),
        (["trainer.replay_coef=0.5", "trainer.recipe=dpo"], "trainer.replay_coef mixes into pg and rest updates; trainer.recipe=dpo"),
        (["trainer.replay_coef=0.5", "cluster.mode=ray"], "trainer.replay_coef runs with cluster.mode=local"),
        (["trainer.replay_coef=-1"], "trainer.replay_coef"),
    ],
)
def test_bad_model_warm_start_imports_and_recipe_fail_before_any_work(overrides, expected):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.").replace("[", r"\[").replace("{", r"\{")):
        load_config(None, overrides)


def test_a_model_directory_needs_a_config_json(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        load_config(None, [f"model.path={tmp_path / 'm'}"])
    (tmp_path / "m" / "config.json").write_text("{}")
    assert load_config(None, [f"model.path={tmp_path / 'm'}"]).model.path == str(tmp_path / "m")
    assert load_config(None, ["model.path=Qwen/Qwen2.5-0.5B-Instruct"]).model.path == "Qwen/Qwen2.5-0.5B-Instruct"  # a hub id: loaded later


def test_imports_are_read_before_the_games_and_from_the_configs_folder(tmp_path):
    (tmp_path / "coin_game_for_config_test.py").write_text(
        "import arena\n"
        "from arena.environments.repeated_matrix import RepeatedMatrixGame\n"
        "arena.register('coin_for_config_test-v0', RepeatedMatrixGame, bots={'copy': 'arena.environments.repeated_matrix.bots:TitForTat'})\n"
    )
    path = tmp_path / "c.yaml"
    path.write_text(
        "imports: [coin_game_for_config_test]\ngames:\n  - id: coin_for_config_test-v0\n    matchups: [{player_0: main, player_1: scripted/copy}]\n"
    )
    cfg = load_config(path)
    assert cfg.imports == ["coin_game_for_config_test"] and cfg.games[0].id == "coin_for_config_test-v0"


def test_a_ray_run_refuses_an_engine_kind_its_actors_do_not_run():
    from arena.config import RunConfig

    data = {"games": [{"id": "negotiation-v0", "matchups": [{"seller": "main", "buyer": "scripted/fair_buyer"}]}], "cluster": {"mode": "ray"}}
    with pytest.raises(ValueError, match="engine.kind=vllm and cluster.engine_kind=hf disagree"):
        RunConfig.model_validate({**data, "engine": {"kind": "vllm"}})
    cfg = RunConfig.model_validate({**data, "engine": {"kind": "vllm"}, "cluster": {"mode": "ray", "engine_kind": "vllm"}})
    assert cfg.engine.kind == cfg.cluster.engine_kind == "vllm"
