"""Benchmarks (not unit tests); run them as scripts."""
