"""The `facepipe` command line (Typer)."""
