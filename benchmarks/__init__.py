"""Benchmarks of ftp_jax: FTP's cost next to its base optimizer, TPGM's, and state memory.

Each script runs from the repository root as ``python benchmarks/<name>.py``; see
the documentation's "Benchmarks" page (docs/benchmarks.md) and each script's docstring.
"""
