"""Pieces shared by the commands."""

from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("detector")


def fail(message: str, code: int) -> int:
    print(f"detector: error: {message}", file=sys.stderr)
    return code


def add_backend_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("cpu", "gpu", "auto"), default="auto",
                   help="where to compute (default: auto)")


def resolve_backend(requested: str) -> str | None:
    """The backend to use, or None (after printing why) when the request cannot be met.

    This version computes on the CPU only; the GPU backend is tracked as its own work item.
    """
    if requested == "gpu":
        fail("--backend gpu: the GPU backend is not available in this version; use --backend cpu", 2)
        return None
    if requested == "auto":
        log.info("backend auto: using the CPU (this version has no GPU backend)")
    return "cpu"
