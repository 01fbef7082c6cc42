"""Argument types of the command line: numbers refused with one clear line when out of range."""

from __future__ import annotations

import argparse
from typing import TypeVar

Number = TypeVar("Number", int, float)


def count(text: str) -> int:
    """An integer of at least 0 (``--delay-labels 0``)."""
    return _bounded(int, text, 0, "a whole number of at least 0")


def positive(text: str) -> int:
    """An integer of at least 1 (``--events 1``)."""
    return _bounded(int, text, 1, "a whole number of at least 1")


def rate(text: str) -> float:
    """A number above 0 (``--rate 0.5``)."""
    value = _bounded(float, text, 0.0, "a number above 0")
    if value == 0.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number above 0")
    return value


def _bounded(kind: type[Number], text: str, least: Number, expected: str) -> Number:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}") from None
    if value < least or value != value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
    return value
