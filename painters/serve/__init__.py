"""Serving compiled plans: an OpenAI-compatible HTTP server and Triton model repositories."""
