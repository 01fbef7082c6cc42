"""Labels and classes between Python and the wire: the ``Label`` oneof, and class keys as text.

Class keys are written the way the learn flow's JSON writes them (``true``, ``false``,
``setosa``, ``3``), so a ``proba`` map reads the same on the predictions topic and here.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from grpc_api.proto import pb


def class_text(value: Hashable) -> str:
    """A class as a map key: ``True`` is ``"true"``, ``3`` is ``"3"``.

    >>> class_text(True), class_text(3), class_text("setosa")
    ('true', '3', 'setosa')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_label(value: Any) -> pb.Label:
    """The ``Label`` message of a Python label or predicted class."""
    if isinstance(value, bool):
        return pb.Label(boolean=value)
    if isinstance(value, str):
        return pb.Label(text=value)
    if isinstance(value, int):
        return pb.Label(integer=value)
    return pb.Label(number=float(value))


def from_label(label: pb.Label) -> Any:
    """The Python value of a ``Label`` message, or ``None`` if it is empty."""
    kind = label.WhichOneof("value")
    return None if kind is None else getattr(label, kind)
