"""Benchmarks: each module measures enginefab against a peer in the same run (ratios, not seconds)."""
