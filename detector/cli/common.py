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


def resolve_backend(requested: str):
    """The :class:`~detector.backend.Backend` to use, or None (after printing why) when the
    GPU was asked for and cannot be used."""
    from detector.backend import BackendUnavailable, select_backend

    try:
        return select_backend(requested)
    except BackendUnavailable as exc:
        fail(f"--backend {requested}: {exc}", 2)
        return None


def print_problems(result) -> None:
    """A job's errors and warnings on stderr, one line each."""
    for msg in result.errors:
        print(f"detector: error: {msg}", file=sys.stderr)
    for msg in result.warnings:
        print(f"detector: warning: {msg}", file=sys.stderr)
