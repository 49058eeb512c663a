"""``python -m bench``: the command line, then a quick exit.

Why the exit: once ``main()`` has returned, every file it wrote is closed (records and reports are
written atomically), yet the interpreter's teardown of torch, timm, lightly and matplotlib took 1.7-2.0 s
on this project's CPU, a tenth of a 2-cell run (issue 27 item 4). So the exit handlers still run (Ray,
multiprocessing, logging, temporary folders) and the streams are flushed, then the process ends
without the module teardown. An exception or ``SystemExit`` from ``main()`` takes the normal path.
"""

import atexit
import os
import sys

from bench.cli import main


def _exit_now(code) -> None:
    status = code if isinstance(code, int) else (0 if code is None else 1)
    if not isinstance(code, int) and code is not None:
        print(code, file=sys.stderr)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):      # a closed or broken pipe: nothing more to say
            pass
    os._exit(status)


_exit_now(main())
