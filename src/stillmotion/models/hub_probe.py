"""Whether the Hugging Face hub can be reached from here: one TCP connection, no download.

A leaf module (nothing of the package), so every loader may ask it without an import loop; callers look it
up as ``hub_probe.hub_reachable()`` so a test can stand in for the network in one place.
"""

from __future__ import annotations

import socket

HUB_PROBE_TIMEOUT_S = 5.0


def hub_reachable(timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connection to the hub's host: enough to tell 'offline' from 'online'."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False
