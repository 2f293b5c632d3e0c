"""The kill test's task: it records each execution in this process's own append-only file.

The file is ``$JOBCHAIN_TEST_RECORD_DIR/exec-PID.log``, one ``N`` line per run
of job number N, written with one ``write`` on an ``O_APPEND`` descriptor, so
a SIGKILL never leaves half a line.
"""

import os
import time

from jobchain import App

app = App()
_fd: int | None = None


@app.task
def record(n: int) -> int:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["JOBCHAIN_TEST_RECORD_DIR"], f"exec-{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    time.sleep(0.004)
    os.write(_fd, f"{n}\n".encode())
    return n
