"""Stop a run cleanly when a person or a scheduler asks.

Slurm and other schedulers send SIGTERM (also on preemption, some time before
SIGKILL), SIGHUP when the terminal goes, and SIGUSR1 where a job asks for a
warning (``--signal=USR1@60``); Ctrl-C is SIGINT. The first of any of them only
sets a flag: the trainer finishes the update it is in, writes its checkpoint
and exits with status ``128 + signal number`` (130 SIGINT, 143 SIGTERM, 129
SIGHUP, 138 SIGUSR1 on Linux), the status a shell reports for a process killed
by that signal, so a scheduler's requeue logic reads it as such. A second
signal exits at once with the same convention, writing nothing: the last
checkpoint on disk (renamed into place atomically) stays the good one.

In a run of several ranks (agents/ppo/distributed.py) a signal at any rank stops all
of them after the same update (``adopt``), and a repeat of the first signal within
``repeat_grace`` seconds is not a second one: under torchrun each process gets the
scheduler's signal and torchrun's forwarded copy of it.
"""

from __future__ import annotations

import os
import signal
import threading
import time

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1")
    if hasattr(signal, name)  # Windows has neither SIGHUP nor SIGUSR1
)


def exit_status(signum: int) -> int:
    return 128 + int(signum)


class GracefulStop:
    """``with GracefulStop() as stop: ... if stop.requested: ...``: stop signals set a flag.

    Outside the main thread (where Python cannot install handlers) it does nothing and
    signals keep their usual effect.
    """

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS, repeat_grace: float = 0.0):
        self.signals = signals
        self.repeat_grace = repeat_grace
        self.signum: int | None = None
        self._since = 0.0
        self._old: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum) if self.signum is not None else 0

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if signum == self.signum and time.monotonic() - self._since < self.repeat_grace:
            return
        if self.signum is not None:
            # os.write and os._exit: nothing here may wait on a lock the interrupted code holds.
            os.write(2, f"\n{name} again: exiting now without saving; the last checkpoint "
                        f"is kept\n".encode())
            os._exit(exit_status(signum))
        self.signum, self._since = signum, time.monotonic()
        os.write(2, f"\n{name}: stopping after the current update and saving a checkpoint "
                    f"(send it again to exit at once)\n".encode())

    def adopt(self, signum: int) -> None:
        """Stop as if ``signum`` had come here (another rank of the run got it)."""
        if self.signum is None:
            self.signum, self._since = signum, time.monotonic()

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
