"""The papers' experiments: reproduce, sweeps (local and Ray), the report, its claims and the fusion table."""
