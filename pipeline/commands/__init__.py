"""One module per ``streaminfer`` command: each ``add``s its parser and ``run``s it."""
