"""`python -m app.ops.healthcheck [ready|live]`: the compose files' container health check.

It asks the API in its own container (127.0.0.1, PORT) with the first key of API_KEYS, read as the
service reads it (`id:key` or a bare key), and exits 0 on a 200, 1 otherwise, printing why:
- `ready` (the default): GET /ready, 200 once the workers have their models loaded. For a container
  that runs the workers itself: healthy means it can transcribe now.
- `live`: GET /live, 200 whenever the API process answers. For an API container whose workers run
  elsewhere (TASK_BACKEND=celery): its health is its own, not that of workers it cannot restart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import httpx

from app.config import Settings

PROBES = {"ready": "/ready", "live": "/live"}


def check(probe: str, settings: Settings, timeout: float) -> str | None:
    """None when the API answers the probe with 200; else what went wrong, fit for the health log."""
    keys = settings.api_key_entries
    if not keys:
        return "API_KEYS is not set, so the service accepts only a key it generated: set API_KEYS"
    url = f"http://127.0.0.1:{settings.port}{PROBES[probe]}"
    try:
        response = httpx.get(url, headers={"X-API-Key": keys[0].key.get_secret_value()}, timeout=timeout)
    except httpx.HTTPError as error:
        return f"GET {url} failed: {error!r}"
    if response.status_code != 200:
        return f"GET {url} answered {response.status_code}: {response.text[:500]}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.ops.healthcheck",
        description="Exit 0 when the API on 127.0.0.1:$PORT answers the probe with 200, using the first key of "
        "API_KEYS; 1 otherwise.",
    )
    parser.add_argument("probe", nargs="?", choices=sorted(PROBES), default="ready")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    args = parser.parse_args(argv)
    problem = check(args.probe, Settings(), args.timeout)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print(f"healthy: {PROBES[args.probe]} answered 200")
    return 0


if __name__ == "__main__":
    sys.exit(main())
