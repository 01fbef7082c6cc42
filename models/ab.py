"""The A/B split: which arm serves an entity, stable by a hash of its key.

The learn flow and every gRPC server use this one function with the fraction stored in
the registry, so an entity is served by the same arm everywhere, run after run.
"""

from __future__ import annotations

import hashlib

CHAMPION = "champion"
CHALLENGER = "challenger"


def bucket(entity: str) -> float:
    """A number in [0, 1) fixed by the entity key (the first 8 bytes of its BLAKE2b hash).

    >>> bucket("user-7") == bucket("user-7")
    True
    """
    digest = hashlib.blake2b(entity.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def serving_arm(entity: str, fraction: float) -> str:
    """``challenger`` for the ``fraction`` of entities whose bucket falls below it.

    >>> serving_arm("anyone", 0.0), serving_arm("anyone", 1.0)
    ('champion', 'challenger')
    """
    return CHALLENGER if bucket(entity) < fraction else CHAMPION


def check_new_model_alias(alias: str, what: str) -> None:
    """Refuse to point a model that never ran in shadow at anything but a challenger alias
    (``challenger``, ``challenger-*``): it must win there before it serves.

    >>> check_new_model_alias("champion", "a retrained model")
    Traceback (most recent call last):
    ...
    ValueError: a retrained model goes under a challenger alias (challenger, challenger-*), \
not 'champion': it must win in shadow before it serves
    """
    if not alias.startswith(CHALLENGER):
        raise ValueError(
            f"{what} goes under a challenger alias (challenger, challenger-*), not {alias!r}: "
            "it must win in shadow before it serves"
        )
