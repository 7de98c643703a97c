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


class InterruptFlag:
    """Turns SIGINT into a flag the loop reads between steps: a step is never cut in half
    (its donated buffers would be gone) and the checkpoint is of a completed step."""

    def __init__(self):
        self.raised = False
        self._old = None

    def __bool__(self) -> bool:
        return self.raised

    def install(self) -> None:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        if self.raised:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.raised = True

    def restore(self) -> None:
        if self._old is not None:
            import signal

            signal.signal(signal.SIGINT, self._old)
            self._old = None


class Progress:
    """A rich progress bar on a terminal; plain lines when output is piped."""

    def __init__(self, console, total: int):
        self.console = console
        self.total = total
        self.bar = None
        self.last_tenth = 0
        if console is not None and console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
            )
            self.task = self.bar.add_task("train", total=total, loss="…")
            self.bar.start()

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
