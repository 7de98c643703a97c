"""The ddm language front end: grammar, parser, AST with spans, formatter, diagnostics.

Nothing here imports another part of ddm (or JAX): ``ddmc check`` and ``ddmc fmt`` stay fast.
"""
