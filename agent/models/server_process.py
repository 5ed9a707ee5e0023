"""Run llama-cpp-python's OpenAI-compatible server as a child that dies with its parent.

``python -m agent.models.server_process PARENT_PID [llama_cpp.server arguments]``. A process killed by
SIGKILL or SIGTERM runs no atexit hook, so the embedded model server would live on, holding
gigabytes and a CPU; a watchdog thread here exits as soon as the parent is gone.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time

CHECK_EVERY_S = 1.0


def _watch(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # re-parented: the parent has exited
            os._exit(0)
        time.sleep(CHECK_EVERY_S)


def main() -> None:
    parent = int(sys.argv[1])
    threading.Thread(target=_watch, args=(parent,), name="parent-watchdog", daemon=True).start()
    sys.argv = ["llama_cpp.server", *sys.argv[2:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
