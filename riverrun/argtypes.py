"""Argument types of the command line: numbers refused with one clear line when out of range,
files a command will write, refused when the flags are read rather than after the work,
and ranges two flags give, refused when they end before they start."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import TypeVar

from models.ab import check_new_model_alias
from models.registry import RegistryError, check_model_name
from riverrun.settings import SettingsError

Number = TypeVar("Number", int, float)


def count(text: str) -> int:
    """An integer of at least 0 (``--delay-labels 0``)."""
    return _bounded(int, text, 0, "a whole number of at least 0")


def positive(text: str) -> int:
    """An integer of at least 1 (``--events 1``)."""
    return _bounded(int, text, 1, "a whole number of at least 1")


def rate(text: str) -> float:
    """A finite number above 0 (``--rate 0.5``, ``--timeout 2.5``).

    >>> rate("inf")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 'inf': expected a finite number above 0
    """
    expected = "a finite number above 0"
    value = _bounded(float, text, 0.0, expected)
    if value == 0.0 or value == math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
    return value


def fraction(text: str) -> float:
    """A number within [0, 1] (``registry ab MODEL 0.1``).

    >>> fraction("1.5")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '1.5': expected a number within [0, 1]
    """
    expected = "a number within [0, 1]"
    value = _bounded(float, text, 0.0, expected)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
    return value + 0.0  # "-0" is 0.0


def nonempty(text: str) -> str:
    """A string that is not empty (``--id-prefix``): an empty one would mean "unset"."""
    if not text:
        raise argparse.ArgumentTypeError("'': expected a non-empty value")
    return text


def model_name(text: str) -> str:
    """A name a model can have (``registry push MODEL``): not empty, no '/'."""
    try:
        return check_model_name(text)
    except RegistryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def challenger_alias(text: str) -> str:
    """The alias of a model that never ran in shadow: a challenger one (``--alias``)."""
    try:
        check_new_model_alias(text, "a new model")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def output_file(text: str) -> str:
    """A file the command writes at its end (``--json FILE``): its folder exists and it is
    no folder itself, checked before the command starts its work.

    >>> output_file("/")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '/' is a folder; give a file name
    >>> output_file("/nonexistent/report.json")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: '/nonexistent/report.json': there is no folder '/nonexistent'
    """
    if not text:
        raise argparse.ArgumentTypeError("'': expected a file name")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    folder = path.parent
    if not folder.exists():
        raise argparse.ArgumentTypeError(f"{text!r}: there is no folder {str(folder)!r}")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(folder)!r} is a file, not a folder")
    if not os.access(path if path.exists() else folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: no permission to write it")
    return text


def plot_file(text: str) -> str:
    """An :func:`output_file` whose extension names a format the plot can be drawn in."""
    from riverrun.plot import file_formats

    formats = file_formats()
    if Path(text).suffix.lower() not in formats:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a file name ending in one of {', '.join(formats)}"
        )
    return output_file(text)


def _bounded(kind: type[Number], text: str, least: Number, expected: str) -> Number:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}") from None
    if value < least or value != value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {expected}")
    return value


def check_range(start: float | None, stop: float | None, start_flag: str, stop_flag: str) -> None:
    """Refuse a range that ends where or before it starts: it could hold nothing."""
    if start is not None and stop is not None and start >= stop:
        raise SettingsError(f"{start_flag} {start!r} is not before {stop_flag} {stop!r}")
