"""Offline state and a one-second Hub reachability probe.

Without the probe, an unreachable Hub costs ~23 s of retries inside huggingface_hub
before any error; with it a missing network is known at once.
"""

from __future__ import annotations

import functools
import os
import threading

PROBE_TIMEOUT_S = 1.5
TRUE_VALUES = {"1", "true", "yes", "on"}


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def offline_from_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_VALUES


def go_offline() -> None:
    """`--offline`, or no network: the HF libraries read these at import, so set both the
    environment (for later imports) and the module constants (if already imported)."""
    import sys

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    for module_name in ("huggingface_hub.constants", "datasets.config"):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, "HF_HUB_OFFLINE"):
            module.HF_HUB_OFFLINE = True


@functools.cache
def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the Hub endpoint answers HTTP at all (any status) within `timeout`.

    urllib honours HTTPS_PROXY like huggingface_hub does. The request runs in a thread
    because DNS lookups ignore socket timeouts.
    """
    import urllib.error  # lazily: urllib.request costs ~20 ms of every start-up
    import urllib.request

    outcome: list[bool] = []

    def probe() -> None:
        request = urllib.request.Request(hub_endpoint() + "/api/whoami-v2", method="HEAD")
        try:
            urllib.request.urlopen(request, timeout=timeout).close()
            outcome.append(True)
        except urllib.error.HTTPError:
            outcome.append(True)  # it answered: the network is there
        except Exception:  # noqa: BLE001 - any failure means unreachable
            outcome.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def offline_state() -> str:
    if offline_from_env():
        return "offline (HF_HUB_OFFLINE=1)"
    return "online (Hub reachable)" if hub_reachable() else "online, but the Hub is unreachable"
