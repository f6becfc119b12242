"""Benchmarks on the deployed artifact: accuracy, latency, sweeps, the CI latency gate, compile scale."""
