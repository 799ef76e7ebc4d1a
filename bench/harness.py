"""What every benchmark's main() does: a throw-away database and ciphertext
store around one run, dropped again however the run ends (Ctrl-C included)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import chain as chain_bench


def main_with_throwaway_database(
    *,
    description: str,
    database: str,
    prefix: str,
    quick,
    full,
    run: Callable[[object, str], None],
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    args = parser.parse_args()
    sizes, mode = (quick, "quick") if args.quick else (full, "full")

    chain_bench.BENCH_DB = database  # the helpers read it at call time
    original_url = chain_bench.configure_environment()

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.perf_counter()
    chain_bench.database_recreate(original_url)
    try:
        with tempfile.TemporaryDirectory(prefix=prefix) as work_dir:
            os.environ["MEDPORTAL_BLOB_ROOT"] = str(Path(work_dir) / "blobs")
            run(sizes, mode)
    except KeyboardInterrupt:
        print("interrupted: dropping the bench database", file=sys.stderr)
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001, S110  (Django may not be set up yet)
            pass
        chain_bench.database_drop(original_url)
    print(f"\ntotal run time: {time.perf_counter() - started:.1f} s ({mode})")
    return 0
