"""Runs several command lines in one fresh process, each as ``python -m MODULE ARGS`` would.

For the command-line tests: one interpreter start (and one JAX import) for many
invocations. ``python -m tests.cli_runner CALLS.json RESULTS.json``, where
``CALLS.json`` holds ``[[module, [arg, ...]], ...]``; ``RESULTS.json`` gets one
``{"code", "stdout", "stderr"}`` per call: the exit code ``sys.exit(main())``
would give, and what the call printed (an uncaught exception's traceback on
stderr, code 1, as the interpreter would print it).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import traceback


def run(module: str, args: list[str]) -> dict:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = importlib.import_module(module).main(args)
        except SystemExit as exit_:
            code = exit_.code
        except BaseException:  # noqa: BLE001 - what the interpreter would print
            traceback.print_exc()
            code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message")
        err.write(f"{code}\n")
        code = 1
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


if __name__ == "__main__":
    calls_path, results_path = sys.argv[1], sys.argv[2]
    with open(calls_path) as file:
        calls = json.load(file)
    results = [run(module, args) for module, args in calls]
    with open(results_path, "w") as file:
        json.dump(results, file)
