"""Array kernels: packet decoding, flow accounting and feature math (CPU with Numba; the same
per-element functions are written to compile for ``numba.cuda`` too)."""
