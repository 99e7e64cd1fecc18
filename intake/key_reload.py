"""Live reload of the sealing keys in a door process (SIGHUP), for key rotation.

A rotation must not stop intake: on SIGHUP each door process re-reads its
configuration (the GELOMBANG_CONFIG file and the environment) and, when the
`[keys]` section is valid, seals every registration it admits from then on
with the new active key. Nothing else is reloaded: the listeners, Redis
connections and requests in hand carry on. A bad new configuration is
refused with a log line (naming the key, never a value) and the keys in force
stay. The hash key cannot change this way: the keyed hashes of NIK and email
are compared with stored ones, so a new hash key would let duplicates in.
"""

from __future__ import annotations

import logging

from config.settings import ConfigError, Settings
from intake.door import Door
from queueing.sealing import Sealer

log = logging.getLogger("gelombang.door")


class KeyReloadRefused(Exception):
    """The new configuration's keys cannot be put in force; the old ones stay."""


def reload_sealing_keys(door: Door) -> str:
    """Put the configuration's sealing keys in force in this process; the active key id."""
    try:
        fresh = Settings.load()
        fresh.keys.require()
    except ConfigError as exc:
        raise KeyReloadRefused(str(exc)) from None
    if fresh.keys.hash_key_bytes() != door.settings.keys.hash_key_bytes():
        raise KeyReloadRefused("keys.hash_key: cannot change while running")
    sealer = Sealer(fresh.keys.sealing_key_bytes(), fresh.keys.active_sealing_key_id)
    # One attribute swap: a request being sealed right now finishes with the
    # sealer it took; the next one takes the new sealer.
    door.sealer = sealer
    door.settings = door.settings.model_copy(update={"keys": fresh.keys})
    return sealer.active_key_id


def on_reload_signal(door: Door, index: int) -> None:
    """The SIGHUP handler's work: reload, and say what is in force."""
    try:
        active = reload_sealing_keys(door)
    except KeyReloadRefused as exc:
        log.error("door process %d: sealing keys not reloaded: %s", index, exc)
        return
    log.info("door process %d: sealing keys reloaded; sealing with key id %r", index, active)
