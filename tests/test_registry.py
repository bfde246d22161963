import pytest

import arena
from arena.registry import register, registered_games


def test_builtin_games_are_registered_with_versions():
    ids = set(registered_games())
    assert {"repeated_matrix-v0", "negotiation-v0"} <= ids
    env = arena.make("negotiation-v0")
    assert set(env.possible_agents) == {"seller", "buyer"}


def test_make_passes_validated_kwargs():
    env = arena.make("repeated_matrix-v0", rounds=3)
    assert env.config.rounds == 3
    with pytest.raises(Exception, match="rounds"):
        arena.make("repeated_matrix-v0", rounds=0)
    with pytest.raises(Exception, match="nonsense"):
        arena.make("repeated_matrix-v0", nonsense=1)


def test_unknown_id_names_the_choices():
    with pytest.raises(KeyError, match="negotiation-v0"):
        arena.make("chess-v9")


def test_register_rejects_bad_and_duplicate_ids():
    with pytest.raises(ValueError, match="version"):
        register("NoVersion", "x:y")
    with pytest.raises(ValueError, match="already registered"):
        register("negotiation-v0", "x:y")


def test_installed_layout_does_not_claim_generic_top_level_names():
    # environments/, agents/ and trainers/ install under arena.*, so a user's own
    # `agents` package (the OpenAI Agents SDK installs one) is never shadowed.
    from importlib.metadata import distributions
    from pathlib import Path

    import arena.agents
    import arena.environments
    import arena.trainers

    # the distribution the imported package came from (a build leaves an egg-info in the source folder,
    # which a process started there also sees: it lists the source tree, not what was installed)
    dists = [d for d in distributions(name="arena-selfplay") if Path(str(d.locate_file("arena/__init__.py"))).resolve() == Path(arena.__file__).resolve()]
    installed = [str(f) for d in dists[:1] for f in d.files or []]
    assert installed, "the arena-selfplay distribution is not installed"
    for top in ("agents/", "environments/", "trainers/"):
        assert not any(f.startswith(top) for f in installed), f"{top} installed as a top-level package"
    assert arena.agents.__name__ == "arena.agents"
    assert arena.environments.__name__ == "arena.environments"
