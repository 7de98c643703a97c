"""The error kinds only the runtime raises: a run's configuration, and a solve that failed
while the program ran. (Every kind derives from :class:`~ddm.dsl.diagnostics.DdmError`, whose
formatting they share; ``ddmc`` prints them as ``FILE:LINE:COL: error: …`` with a caret.)

>>> from ddm.dsl.span import Span
>>> print(ConfigDiagnostic(Span("run.yaml", 2, 8, 2, 10), "'steps' must be an integer",
...                        hint="steps: 100").with_source("data: x\\nsteps: ab\\n"))
run.yaml:2:8: error: 'steps' must be an integer
   2 | steps: ab
              ^~
  hint: steps: 100
"""

from __future__ import annotations

from ddm.dsl.diagnostics import DdmError


class ConfigDiagnostic(DdmError):
    """A run setting that is unknown, of the wrong kind or out of range — in the program's
    ``run { }`` section, a YAML config or a ``--set`` argument, located there."""

    kind = "config"


class SolverDiagnostic(DdmError):
    """A declarative node's solver failed on some instance while the program ran: the message
    names the node, the instance, the status and the residual."""

    kind = "solver"


class ResourceDiagnostic(DdmError):
    """A program that cannot fit the device's memory at its bound dims, found before
    compiling: the message gives the estimate and the device's memory, the note the largest
    part, the location the dim that makes it large."""

    kind = "resource"
