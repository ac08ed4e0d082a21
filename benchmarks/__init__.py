"""Benchmarks (run them; tests never assert on time).  `bench_core.py`: the cryptographic core at
production parameters, next to a single-key libsecp256k1 baseline."""
