"""The command lines' config files: ``--config NAME`` or ``--config experiments/configs/NAME.py``.

Each file's ``get_config()`` returns the config; its docstring gives the command and the
expected result. In the installed package they are ``ftp_jax.configs.<name>``
(``ftp_jax/configs`` is a link to this folder), so ``--config NAME`` works without a checkout.
"""
