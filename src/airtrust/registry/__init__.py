"""OCI registry adapter: the distribution API client and image patching on top of it."""

import sys

# httpx imports its own command line (click, rich, pygments: ~80 ms) whenever
# those are installed, as they are for ours. We never run httpx's CLI; a None
# entry makes that one import fail fast, and httpx falls back to a stub.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
