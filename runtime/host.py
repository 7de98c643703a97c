"""What the host loop of a training run needs from its surroundings: Ctrl-C as a flag read
between steps, and a progress display (a rich bar on a terminal, plain lines when piped).
"""

from __future__ import annotations


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the checkpoint of the last completed step was written."""

    def __init__(self, step: int, steps: int, out_dir: str | None):
        self.step, self.steps, self.out_dir = step, steps, out_dir
        where = (
            f"; checkpoint written to {out_dir}, continue with --resume {out_dir}"
            if out_dir
            else ""
        )
        super().__init__(f"training interrupted after step {step} of {steps}{where}")


ACK = (
    "ddmc: Ctrl-C — stopping after the current step (it may still be compiling) and writing "
    "a checkpoint; press Ctrl-C again to stop at once\n"
)


class InterruptFlag:
    """Turns SIGINT into a flag the loop reads between steps: a step is never cut in half
    (its donated buffers would be gone) and the checkpoint is of a completed step.

    The first Ctrl-C is acknowledged at once, even while XLA compiles: Python runs a signal
    handler only between bytecodes of the main thread, which a compile holds for seconds to a
    minute, so the acknowledgement comes from a thread woken through ``signal.set_wakeup_fd``
    (written by the C-level handler the moment the signal arrives)."""

    def __init__(self, ack: bool = True):
        self.raised = False
        self.acked = False
        self._old = None
        self._ack = ack
        self._fds: tuple[int, int] | None = None
        self._old_fd = -1

    def __bool__(self) -> bool:
        return self.raised

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return
        self._old = signal.signal(signal.SIGINT, self._on_signal)
        if not self._ack:
            return
        import os

        r, w = os.pipe()
        os.set_blocking(w, False)
        try:
            self._old_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread of the main interpreter
            os.close(r)
            os.close(w)
            return
        self._fds = (r, w)
        threading.Thread(target=self._watch, args=(r,), daemon=True, name="ddm-ctrl-c").start()

    def _watch(self, fd: int) -> None:
        import os
        import signal
        import sys

        while True:
            try:
                data = os.read(fd, 64)
            except OSError:
                data = b""
            if not data:  # restore() closed the write end
                os.close(fd)
                return
            if signal.SIGINT in data and not self.acked:
                self.acked = True
                try:
                    sys.stderr.write(ACK)
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass

    def _on_signal(self, signum, frame) -> None:
        if self.raised:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.raised = True

    def restore(self) -> None:
        import os
        import signal

        if self._fds is not None:
            signal.set_wakeup_fd(self._old_fd)
            w = self._fds[1]
            os.close(w)  # the watcher reads EOF and ends
            self._fds = None
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


class Progress:
    """A rich progress bar on a terminal; plain lines when output is piped. Until the first step
    returns it says that the step is compiling (XLA takes seconds to a minute: a bar that shows
    nothing for that long looks hung)."""

    def __init__(self, console, total: int, compiling: bool = True):
        self.console = console
        self.total = total
        self.bar = None
        self.last_tenth = 0
        self.compiling = compiling
        if console is not None and console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            what = "compiling the training step (XLA)…" if compiling else "training"
            self.task = self.bar.add_task(what, total=total, loss="…")
            self.bar.start()
        elif console is not None and compiling:
            console.print("compiling the training step (XLA)…", highlight=False)

    def stepped(self) -> None:
        """A step has run: compiling is over."""
        if self.compiling:
            self.compiling = False
            if self.bar is not None:
                self.bar.update(self.task, description="training")

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=f"{loss:.5g}")
        elif self.console is not None and (
            step * 10 // self.total != self.last_tenth or step == self.total
        ):
            self.last_tenth = step * 10 // self.total
            self.console.print(f"step {step}/{self.total}  loss {loss:.6g}", highlight=False)

    def note(self, step: int, metrics: dict) -> None:
        if self.console is not None:
            text = "  ".join(f"{k} {x:.4g}" for k, x in metrics.items())
            self.console.print(f"step {step}: test {text}", highlight=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
