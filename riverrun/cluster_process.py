"""One process of a ``riverrun learn --processes N`` cluster, as its parent starts it:
``python -m riverrun.cluster_process K "HOST:PORT;HOST:PORT;..."``, with the settings in
the ``RIVERRUN_*`` environment. A known failure is one line and exit status 2, as
``riverrun learn`` alone reports it; the parent names any other end."""

from __future__ import annotations

import signal
import sys

from riverrun.cli import reporting
from riverrun.runner import run_process, stop_quietly_on_signal
from riverrun.settings import Settings


def main(process_id: int, addresses: list[str]) -> int:
    """Run process ``process_id`` of the cluster at ``addresses`` until the input ends or a
    signal stops it (silently: the parent says it once)."""

    # Ctrl-C at a terminal reaches the whole process group: the parent passes it on to each
    # process as one SIGTERM, which a second signal here would turn into a stop at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def work() -> int:
        try:
            with stop_quietly_on_signal(announce=False, graceful=True, signals=(signal.SIGTERM,)):
                run_process(Settings.from_env(), process_id, addresses)
        except BaseException as exc:  # pyo3's PanicException, when a peer's failure stops it
            if type(exc).__name__ != "PanicException":
                raise
            print(f"riverrun learn: learn process {process_id} stopped: {exc}", file=sys.stderr)
            return 1  # its Python traceback says nothing more; the peer that failed says why
        return 0

    return reporting("learn", work)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2].split(";")))
