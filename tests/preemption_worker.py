"""One of two processes for ``tests/test_preemption.py``: a Ctrl-C on one host stops both.

``python -m tests.preemption_worker PROCESS_ID PORT``

The two processes join through ``jax.distributed.initialize`` on localhost (which
starts JAX's preemption service) and count steps, 10 ms each, checking
:class:`ftp_jax.train.preemption.Interrupt` after every one; process 1 gets a
Ctrl-C (SIGINT) after step 5. Each prints ``STOP <step>`` where it stops and
exits with the command line's code (``ftp_jax.cli.run``): 130 after its own
Ctrl-C, 143 when another host's notice stopped it.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def main(process_id: int, port: int) -> int:
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.distributed.initialize(
        f"localhost:{port}", num_processes=2, process_id=process_id, initialization_timeout=60
    )
    from ftp_jax import cli
    from ftp_jax.train.preemption import Interrupt

    def body():
        with Interrupt(0) as interrupt:
            for step in range(1, 3001):  # 30 s at most
                time.sleep(0.01)  # the step
                if process_id == 1 and step == 5:
                    os.kill(os.getpid(), signal.SIGINT)
                if interrupt.reached(step):
                    print(f"STOP {step}", flush=True)
                    interrupt.stop()
        return 1  # never stopped

    return cli.run(body, debug=False)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2])))
