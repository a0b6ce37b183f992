"""twins package."""
