"""How long a test waits for a subprocess: only a hang reaches it.

A test states what it checks (the refusal, the file written, nothing trained), never how fast: on a
busy 2-core machine (load 16: other runs beside the tests) a subprocess that imports torch and
Lightning takes many times its quiet time, and a wall-clock bound would fail a correct command.
"""

#: Seconds before a subprocess of a test counts as hung.
HANG_SECONDS = 900
