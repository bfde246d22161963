"""Negotiation's rule for the critic loop's feedback (:mod:`arena.critic_loop`): never name a price.

The coached side should learn a way to bargain, not a figure, so every number the critic writes
(with an optional currency sign, thousands separators and decimals) is cut from its feedback, and
counted; a suggestion that was nothing but a number is dropped. Registered as negotiation's
``feedback_filter``; its ``rule`` is stated in the critic's prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: a number, with an optional currency sign and decimals: what feedback may not contain
NUMBER = re.compile(r"(?:\$\s?)?\d+(?:,\d{3})*(?:\.\d+)?")
#: what a cut number is replaced with
CUT = "[number cut]"


@dataclass(frozen=True)
class NoNumbers:
    """``feedback_filter(text) -> (text, numbers cut)``: every number replaced by :data:`CUT`; a text
    that held nothing else (but punctuation) becomes empty."""

    rule: str = "Never name a price or any number."

    def __call__(self, text: str) -> tuple[str, int]:
        cut = len(NUMBER.findall(text))
        if cut and not NUMBER.sub("", text).strip(" \t.,;:!?-$"):
            return "", cut
        return NUMBER.sub(CUT, text), cut


cut_numbers = NoNumbers()
