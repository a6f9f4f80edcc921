"""Child processes that end with the process that started them, however it ends.

The API stops its worker, standby and enrolment processes when it shuts down; when it is killed
(SIGKILL, the out-of-memory killer) nothing of it runs to do so, and a child holding a gigabyte of
models would live on under PID 1, and keep multiprocessing's resource tracker alive with it (the
tracker exits once every process holding its pipe has). Linux ends such a child for us: a child
asks with PR_SET_PDEATHSIG for a signal when its parent dies, first thing after it starts.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def end_with_parent() -> None:
    """Have the kernel kill this process when the one that started it dies (Linux; elsewhere nothing).

    Call it first thing in a process started by multiprocessing. The signal is SIGKILL: an orphan's
    results have nobody to go to, and it may be deep in a model call that would not see SIGTERM for
    seconds. Linux sends it when the parent *thread* that started the child ends, so start children
    from a thread that lasts as long as they should (the event loop's).
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before the request above
        os._exit(1)
