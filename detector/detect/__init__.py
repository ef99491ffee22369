"""Detectors: each a small module that consumes flow records and L7/packet events and emits
alerts with their evidence. See :mod:`detector.detect.base` for the interface and
:data:`detector.detect.registry.DETECTORS` for the list."""
