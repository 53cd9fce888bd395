"""Command-line entry points (console scripts ppufo-*; tools/*.py and deploy/*/*.py call them)."""
