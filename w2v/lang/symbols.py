"""Symbol tables (``tokens.txt``, ``words.txt``): the one reader and writer, and what a
disambiguation symbol is.

``tokens.txt`` (icefall order): ``<blk> 0`` first, every modelling unit, then the disambiguation
symbols ``#0``, ``#1``, ... last. A disambiguation symbol is ``#`` followed by digits and nothing
else. A modelling unit may itself begin with ``#``: sentencepiece makes a piece ``#`` of a
transcript's ``C#`` (a character lang dir has none: Mandarin normalisation removes symbols). Such a
unit is a CTC output like any other, so "starts with ``#``" is not the test; a unit spelled exactly
``#<digits>`` would collide with a disambiguation symbol, and :func:`write_symbol_table` refuses
the duplicate.

Free of k2, so training (``w2v.asr``) reads tokens.txt without it.
"""

from __future__ import annotations

import os
from typing import Sequence

from w2v.utils import atomic_write_text

BLANK = "<blk>"


def write_symbol_table(path: str | os.PathLike, symbols: Sequence[str]) -> None:
    """Write ``symbol id`` lines, ids in list order, atomically."""
    if len(set(symbols)) != len(symbols):
        duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
        raise ValueError(f"duplicate symbols for {path}: {duplicates}")
    atomic_write_text(path, "".join(f"{s} {i}\n" for i, s in enumerate(symbols)))


def read_symbol_table(path: str | os.PathLike) -> dict[str, int]:
    """``symbol id`` lines as a symbol → id map (blank lines skipped).

    Raises:
        ValueError: a line that is not two fields, naming the file and line.
    """
    table: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise ValueError(f"{path}:{n}: expected 'symbol id', got {line!r}")
            table[fields[0]] = int(fields[1])
    return table


def read_tokens(path: str | os.PathLike) -> dict[str, int]:
    """``tokens.txt`` as a symbol → id map, checked to have the CTC blank at id 0.

    Raises:
        ValueError: a malformed line, or ``<blk>`` missing or not 0.
    """
    tokens = read_symbol_table(path)
    if tokens.get(BLANK) != 0:
        raise ValueError(f"{path}: '{BLANK}' must have id 0 (CTC blank), got {tokens.get(BLANK)}")
    return tokens


def is_disambig(symbol: str) -> bool:
    """``#0``, ``#1``, ...: a disambiguation symbol, not a modelling unit (``#``, ``#A`` are units)."""
    return symbol.startswith("#") and symbol[1:].isdigit()


def max_token_id(tokens: dict[str, int]) -> int:
    """Largest id of a modelling unit: the CTC output dimension V is this + 1, and H's top label."""
    return max(i for s, i in tokens.items() if not is_disambig(s))


__all__ = ["BLANK", "is_disambig", "max_token_id", "read_symbol_table", "read_tokens", "write_symbol_table"]
