"""Encoders, density heads and detectors, each found through its registry."""
