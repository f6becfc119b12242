"""Deploy targets: checkpoints that other engines serve with a plan (one module per target)."""
