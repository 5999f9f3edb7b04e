"""Benchmarks of ftp_jax: FTP's cost next to its base optimizer, TPGM's, and state memory.

Each script runs from the repository root as ``python benchmarks/<name>.py``; see
the README's "Benchmarks" section and each script's docstring.
"""
