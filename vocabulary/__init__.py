"""The words both sides of the wire use: ids, statuses, reasons, task names, the queue message,
and the parsers of what a source may set (weight, memory limit, recipe YAML).

`controlplane/` and `executor/` each import this package and never each other, so a status or
a pool id means the same thing wherever it is checked.
"""
