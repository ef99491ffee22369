"""Slurm host lists: ``cn[0001-0004,0007],gpu01`` to host names.

Slurm writes node sets in this compressed form (``scontrol show hostnames`` expands them). A
range keeps the zero padding of its lower bound (``cn[098-101]``: cn098 ... cn101); several
bracket groups in one name expand as their product (``r[1-2]n[01-02]``).
"""

from __future__ import annotations

import itertools
import re

MAX_HOSTS = 1_000_000  # a range this long is a typo, not a cluster

_GROUP = re.compile(r"\[([^\]]*)\]")


def expand(text: str) -> list[str]:
    """The host names of a Slurm host list; ValueError names what does not parse."""
    out: list[str] = []
    for item in _split(text.strip()):
        parts = _GROUP.split(item)  # text, group, text, group, ..., text
        choices = [[p] if k % 2 == 0 else _group(p, item) for k, p in enumerate(parts)]
        if sum(len(c) for c in choices) > MAX_HOSTS:
            raise ValueError(f"host list {item!r} is too long")
        out.extend("".join(combo) for combo in itertools.product(*choices))
        if len(out) > MAX_HOSTS:
            raise ValueError(f"host list {text[:60]!r} is too long")
    return out


def _split(text: str) -> list[str]:
    """Split at the commas and blanks outside brackets."""
    items, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch in ", \t" and depth == 0:
            items.append(text[start:k])
            start = k + 1
        if depth not in (0, 1):
            raise ValueError(f"unbalanced brackets in host list {text!r}")
    if depth:
        raise ValueError(f"unbalanced brackets in host list {text!r}")
    items.append(text[start:])
    return [i.strip() for i in items if i.strip()]


def _group(body: str, item: str) -> list[str]:
    values = []
    for part in body.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"not a range in host list {item!r}: {part!r}")
        if not dash:
            values.append(lo)
            continue
        a, b = int(lo), int(hi)
        if b < a or b - a >= MAX_HOSTS:
            raise ValueError(f"bad range in host list {item!r}: {part!r}")
        values.extend(str(v).zfill(len(lo)) for v in range(a, b + 1))
    return values
