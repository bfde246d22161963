"""The games Arena ships, one package each. Importing this package registers them.

Each package (``environments/<game>/``) holds everything that belongs to its
game: ``rules.py`` (the rules; its docstring is the spec), ``bots.py`` (its
scripted bots), and whatever else is its own (a data generator, an
evaluation and report, a warm start). Its ``__init__`` registers the game with
:func:`arena.register`, declaring those parts: a user's game package does
exactly the same, from outside Arena.
"""

from arena.environments import collab_qa, debate, negotiation, repeated_matrix, social_deduction  # noqa: F401
