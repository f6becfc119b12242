"""Adapters that put painters runners behind other tools' interfaces (each imports its tool lazily)."""
