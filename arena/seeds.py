"""Every seed a run uses, derived in one place from the run seed and a path.

An episode's seed, a round's batch order, a snapshot draw: each is
``derive_seed(run_seed, TAG, ...)`` where the tag names what the seed is for,
so that evaluation, training and critic-loop games never share seeds, and a
resumed run draws exactly what it would have drawn. Nothing seeds global state.
"""

from __future__ import annotations

import numpy as np

#: seed-path tags: evaluation and training episodes (and critic-loop games) never share seeds
EVAL, TRAIN, CRITIC = 0, 1, 2
#: seed-path tag of `arena crossplay` episodes (pairings of saved policies, outside any run)
CROSSPLAY = 3


def derive_seed(seed: int, *path: int) -> int:
    """A 32-bit seed from ``seed`` and its place (``path``) in a run."""
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


def sample_index(*path: int) -> int:
    """A nonzero sampling index (``Matchup.sample``): its policies' randomness differs from sample 0's."""
    return derive_seed(*path, 0x7EE) | 1
