"""Stopping a run on SIGTERM or Ctrl-C at a step that every host agrees on.

Orbax's saves are collective: on several hosts, every host must save the same
step, or the save deadlocks (or writes a mix of steps). A scheduler's SIGTERM
(the preemption notice) reaches one host, or all of them at different times, so
a host cannot act on its own signal. :class:`Interrupt` therefore works in one of
two ways:

- **One process** (``jax.process_count() == 1``): Python signal handlers turn
  SIGTERM and Ctrl-C into a flag that the loop reads after every step; the loop
  saves a checkpoint and stops there.
- **Several processes** (after ``jax.distributed.initialize``): SIGTERM is left to
  JAX's preemption service, which ``jax.distributed.initialize`` starts (config
  ``jax_enable_preemption_service``, on by default). Its C++ handler catches the
  signal on whichever host gets it and tells every host through the coordination
  service; the hosts exchange the step each has reached and pick the fastest
  one's next step as the sync point.
  :func:`jax.experimental.multihost_utils.reached_preemption_sync_point` is True
  at that step on every host, so all of them save that step and stop. Ctrl-C on
  a host is passed on to that handler as a SIGTERM.

The per-step check costs a mutex and an integer comparison in JAX's C++ runtime
(0.1 microseconds per call, measured on this project's CPU machine with two
processes), with no device or network round trip, so it runs after every step.
While the hosts agree on the sync point (once, after a notice), the call blocks
the fastest host until the others have reported their step.

The sync point is a training step: the step count after the step just taken, the
same number on every host. Orbax's ``CheckpointManager.save(step)`` asks the same
sync point with the step it saves (``CheckpointManager.reached_preemption``, a
wrapper with a log line), which is the loop's step, so both agree. A run reports
its first step (where it starts or resumes) on entry; a notice that arrives
before that, while a resumed run starts up, is answered with a step that run does
not reach: it trains on until the scheduler ends it, and the next run resumes from
its last checkpoint.

JAX's SIGTERM handler looks for the signal once a second, so the hosts stop up to
about a second after it. A SIGTERM handler installed from Python after
``jax.distributed.initialize`` (by other code) replaces JAX's and hides the notice.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings

import jax
from jax.experimental import multihost_utils

__all__ = ["Interrupt", "preemption_service_running"]


def preemption_service_running() -> bool:
    """Whether JAX's preemption service runs in this process (after
    ``jax.distributed.initialize`` with ``jax_enable_preemption_service`` on)."""
    from jax._src import distributed

    state = distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


class Interrupt:
    """Turns SIGTERM and Ctrl-C (SIGINT) into a checkpoint and a stop, on one host or many.

    Use as a context manager around the training loop, calling :meth:`reached`
    after every training step (on every host) with the step count, and
    :meth:`stop` after the checkpoint::

        with Interrupt(step) as interrupt:
            for batch in batches:
                state, step = train_step(state, batch), step + 1
                if interrupt.reached(step):
                    save(state)
                    interrupt.stop()

    Args:
      step: the step the run starts (or resumes) at, the same on every host.

    On one process the stop comes at the first step boundary after the signal (or
    earlier, where the loop asks :attr:`requested` elsewhere, e.g. between
    evaluation batches). On several, it comes at the preemption sync point (see
    the module docstring): the same step on every host, whichever host got the
    signal. The stop is ``SystemExit(143)`` after SIGTERM (and, on several hosts,
    on the hosts that got no signal), ``KeyboardInterrupt`` after Ctrl-C. A second
    Ctrl-C stops at once (the last checkpoint is kept).

    A signal is never dropped: if the block ends normally after a signal that no
    :meth:`stop` answered (it came after the last step's check), leaving the
    block stops (:meth:`stop`), so a caller never goes on to other work.

    On several processes without JAX's preemption service
    (``jax_enable_preemption_service=False``) no host can stop safely on its own:
    the signals keep their default effect (SIGTERM ends the process, Ctrl-C raises
    at once) and the run resumes from its last regular checkpoint; a warning says so.
    """

    def __init__(self, step: int = 0):
        self.start_step = step
        self.requested = False  # True once the loop is to save and stop
        self.signum: int | None = None  # the signal this process received, if any
        self.stopped = False  # True once stop() has raised
        self._previous: dict[int, object] = {}
        self.multihost = jax.process_count() > 1
        self._synced = self.multihost and preemption_service_running()

    def __enter__(self) -> Interrupt:
        if self.multihost and not self._synced:
            warnings.warn(
                "SIGTERM and Ctrl-C are not handled on several hosts without JAX's preemption "
                "service (jax_enable_preemption_service is off): a host that saved on its own "
                "would deadlock orbax's collective save. The run resumes from its last regular "
                "checkpoint (see TrainConfig.checkpoint_every).",
                stacklevel=2,
            )
            return self
        # With the preemption service, SIGTERM belongs to its C++ handler: a Python
        # handler would replace it and no host would hear of the notice.
        signums = (signal.SIGINT,) if self._synced else (signal.SIGTERM, signal.SIGINT)
        if self._synced:  # the step the run starts at; sync points count steps from it
            self.reached(self.start_step)
        for signum in signums:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        if signum == signal.SIGINT and (self.requested or self.signum is not None):
            raise KeyboardInterrupt
        self.signum = signum
        if self._synced:
            os.kill(os.getpid(), signal.SIGTERM)  # to the preemption service's handler
        else:
            self.requested = True
        if signum == signal.SIGINT:
            where = "at the step all hosts agree on" if self._synced else "and stopping"
            print(
                f"\nCtrl-C: saving a checkpoint {where} (Ctrl-C again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

    def reached(self, step: int) -> bool:
        """Whether the loop is to save and stop at ``step``; call after every training step.

        Args:
          step: the steps taken so far (the run's step count after this step).

        On several hosts this asks JAX's preemption service (no device or network
        round trip but while the hosts agree on the sync point) and is True at the
        same step on every host.
        """
        if self._synced and not self.requested:
            self.requested = multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def stop(self):
        """Leaves the run after its checkpoint: ``KeyboardInterrupt`` after this process's
        Ctrl-C, else ``SystemExit(143)`` (SIGTERM here or on another host)."""
        self.stopped = True
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(143)

    def __exit__(self, exc_type, exc, traceback):
        # Handlers first: a signal from here on meets the previous handler (the command
        # line's stops at once); one that came before is in ``requested``.
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        if exc_type is None and self.signum is not None and not self.stopped and not self._synced:
            self.stop()  # a signal after the last check: stop now rather than drop it
