"""Registered names and devices in a cluster: ``chat.registrations``'s
rules, kept in the cluster's Redis so that every server agrees.

Each registration is a hash, ``socket-chat:registered:<names.key(name)>``
(so a look-alike is the same registration), set to expire after the
``--name-expiry`` days and renewed by each use; the names of one owner are
a set, ``socket-chat:registered-by:<fingerprint>``, which the Lua script
that registers counts against the cap. A device is a hash,
``socket-chat:device:<fingerprint>``, and an owner's devices a set,
``socket-chat:devices:<fingerprint>``; devices do not expire. Every change is
one script (cluster_scripts.py), atomic in Redis: two servers registering
one name at once give it to one key.

Nothing is kept by a server but what it read: a restart of any server loses
nothing, and what Redis keeps (its RDB or AOF) is what the cluster keeps.

While Redis is lost (the cluster is degraded: cluster.py) a name is usable
only as this server last read it from Redis: the owner of a registration
read before gets it back; a name this server has not read is refused with
``NAMES_UNCHECKED`` (``may_use`` raises ``RegistryUnavailable``), rather
than risk giving someone's name to another key; nothing new is registered.
Who is online stays online.

This module is imported only with ``--cluster`` (through ``cluster``).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from socket_chat import crypto, protocol
from socket_chat.chat import names
from socket_chat.chat.registrations import (
    DAY,
    DEFAULT_EXPIRY_DAYS,
    MAX_DEVICES,
    MAX_NAMES_PER_KEY,
    Device,
    DeviceAdded,
    Registration,
    RegistryUnavailable,
    Taken,
)
from socket_chat.server.cluster import RedisCluster, is_username
from socket_chat.server.cluster_scripts import ADD_DEVICE, REGISTER, REMOVE_DEVICE, UNREGISTER

__all__ = [
    "DEVICE_PREFIX",
    "DEVICES_PREFIX",
    "HELD_PREFIX",
    "REGISTERED_PREFIX",
    "RedisRegistrations",
]

log = logging.getLogger("chat.cluster")

REGISTERED_PREFIX = "socket-chat:registered:"
HELD_PREFIX = "socket-chat:registered-by:"
DEVICE_PREFIX = "socket-chat:device:"
DEVICES_PREFIX = "socket-chat:devices:"
#: Registrations remembered from Redis for an outage (the most recent).
REMEMBERED = 10_000


class RedisRegistrations:
    """``chat.registrations.NameRegistry`` on the cluster's Redis.

    Args:
        cluster: the connected cluster (its Redis, and whether it is lost).
        expiry_days: days unused after which a registration lapses (0: never).
        cap: names one owner may hold.
        clock: Unix time.
    """

    def __init__(
        self,
        cluster: RedisCluster,
        expiry_days: float = DEFAULT_EXPIRY_DAYS,
        cap: int = MAX_NAMES_PER_KEY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cluster, self.cap, self._clock = cluster, cap, clock
        self._expiry_ms = int(min(expiry_days * DAY * 1000, 2**62))  # 0: never
        redis = cluster.redis
        self._register = redis.register_script(REGISTER)
        self._unregister = redis.register_script(UNREGISTER)
        self._add_device = redis.register_script(ADD_DEVICE)
        self._remove_device = redis.register_script(REMOVE_DEVICE)
        self._lock = threading.Lock()
        # names.key -> the registration last read (None: none), for an outage.
        self._seen: collections.OrderedDict[str, Registration | None] = collections.OrderedDict()
        self._owners: dict[str, str] = {}  # device -> owner, as last read

    # Names.

    def lookup(self, name: str) -> Registration | None:
        """The registration of ``name`` or a look-alike; while Redis is lost,
        the one last read (None if none was)."""
        try:
            return self._read(name)
        except RegistryUnavailable:
            with self._lock:
                return self._seen.get(names.key(name))

    def may_use(self, name: str, fingerprint: str | None) -> bool:
        try:
            registration = self._read(name)
        except RegistryUnavailable:
            with self._lock:
                key = names.key(name)
                if key not in self._seen:
                    raise
                registration = self._seen[key]
            if registration is None:  # free when last read, but who knows now
                raise
        if registration is None:
            return True
        return fingerprint is not None and registration.fingerprint in (fingerprint, self.owner_of(fingerprint))

    def take(self, name: str, fingerprint: str | None) -> Taken:
        if fingerprint is None:
            return Taken.GUEST
        owner = self.owner_of(fingerprint)
        key = names.key(name)
        now = int(self._clock())
        try:
            taken = self._call(
                self._register,
                keys=[REGISTERED_PREFIX + key, HELD_PREFIX + owner],
                args=[key, name, owner, fingerprint, now, self._expiry_ms, self.cap, REGISTERED_PREFIX],
            )
        except RegistryUnavailable:
            log.warning("%s was not registered: the cluster is lost", name)
            return Taken.UNCHECKED
        result = Taken(taken.decode())
        if result is Taken.REGISTERED:
            self._remember(key, Registration(name, owner, now, now))
        return result

    def release(self, name: str) -> Registration | None:
        """Free ``name``, from any server's console.

        Raises:
            RegistryUnavailable: Redis is lost: nothing was released.
        """
        if len(name) > 4 * protocol.MAX_USERNAME_LENGTH:
            return None
        key = names.key(name)
        found = self._call(self._unregister, keys=[REGISTERED_PREFIX + key], args=[HELD_PREFIX, key])
        self._remember(key, None)
        return None if found is None else _registration(found)

    def held_by(self, fingerprint: str) -> list[Registration]:
        held = self._call(self._cluster.redis.smembers, HELD_PREFIX + fingerprint)
        pipe = self._cluster.redis.pipeline(transaction=False)
        keys = sorted(held)
        for key in keys:
            pipe.hmget(REGISTERED_PREFIX.encode() + key, "name", "owner", "registered_at", "used_at")
        found = [_registration(fields) for fields in self._call(pipe.execute)]
        return sorted(
            (r for r in found if r is not None and r.fingerprint == fingerprint), key=lambda r: r.registered_at
        )

    def _read(self, name: str) -> Registration | None:
        if len(name) > 4 * protocol.MAX_USERNAME_LENGTH:  # bounded before it becomes a key
            return None
        key = names.key(name)
        fields = self._call(
            self._cluster.redis.hmget, REGISTERED_PREFIX + key, "name", "owner", "registered_at", "used_at"
        )
        registration = _registration(fields)
        if registration is None and fields[0] is not None:
            log.warning("the registration of %r is not one a server wrote: ignored", name)
        self._remember(key, registration)
        return registration

    def _remember(self, key: str, registration: Registration | None) -> None:
        with self._lock:
            self._seen[key] = registration
            self._seen.move_to_end(key)
            while len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)

    # Devices.

    def owner_of(self, fingerprint: str) -> str:
        """The owner of the device ``fingerprint``, or itself; while Redis
        is lost, as last read."""
        try:
            found = self._call(self._cluster.redis.hget, DEVICE_PREFIX + fingerprint, "owner")
        except RegistryUnavailable:
            with self._lock:
                return self._owners.get(fingerprint, fingerprint)
        owner = found.decode("ascii", "replace") if found is not None else None
        if owner is not None and not crypto.FINGERPRINT_PATTERN.fullmatch(owner):
            log.warning("the device hash of %s holds no fingerprint: ignored", fingerprint)
            owner = None
        with self._lock:
            if owner is None:
                self._owners.pop(fingerprint, None)
            elif len(self._owners) < REMEMBERED:
                self._owners[fingerprint] = owner
        return owner or fingerprint

    def add_device(self, owner: str, device: str) -> DeviceAdded:
        keys = [DEVICE_PREFIX + device, DEVICES_PREFIX + owner, DEVICE_PREFIX + owner, DEVICES_PREFIX + device]
        keys.append(HELD_PREFIX + owner)
        added = self._call(
            self._add_device, keys=keys, args=[device, owner, int(self._clock()), MAX_DEVICES, REGISTERED_PREFIX]
        )
        return DeviceAdded(added.decode())

    def remove_device(self, owner: str, device: str) -> bool:
        removed = self._call(
            self._remove_device, keys=[DEVICE_PREFIX + device, DEVICES_PREFIX + owner], args=[device, owner]
        )
        if removed:
            with self._lock:
                self._owners.pop(device, None)
        return bool(removed)

    def devices_of(self, owner: str) -> list[Device]:
        listed = sorted(self._call(self._cluster.redis.smembers, DEVICES_PREFIX + owner))
        pipe = self._cluster.redis.pipeline(transaction=False)
        for device in listed:
            pipe.hmget(DEVICE_PREFIX.encode() + device, "owner", "added_at")
        devices = []
        for device, (held, added) in zip(listed, self._call(pipe.execute), strict=True):
            if held == owner.encode() and added is not None and added.isdigit():
                devices.append(Device(device.decode("ascii", "replace"), owner, int(added)))
        return sorted(devices, key=lambda d: d.added_at)

    def _call(self, command: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``command``'s reply; RegistryUnavailable if Redis is lost (now or before)."""
        reply = self._cluster.call(command, *args, otherwise=_LOST, **kwargs)
        if reply is _LOST:
            raise RegistryUnavailable("the cluster's Redis cannot be reached")
        return reply


_LOST = object()


def _registration(fields: list[bytes | None]) -> Registration | None:
    """A registration hash's (name, owner, registered_at, used_at), or None
    if it is missing or not what a server writes."""
    if len(fields) != 4 or any(field is None for field in fields):
        return None
    name, owner, registered_at, used_at = fields
    assert name is not None and owner is not None and registered_at is not None and used_at is not None
    try:
        text, fingerprint = name.decode("utf-8"), owner.decode("ascii")
        registered, used = float(registered_at), float(used_at)
    except (UnicodeDecodeError, ValueError):
        return None
    if (
        not is_username(text)
        or not crypto.FINGERPRINT_PATTERN.fullmatch(fingerprint)
        or not all(math.isfinite(t) and 0 <= t < 2**32 for t in (registered, used))
    ):
        return None
    return Registration(text, fingerprint, int(registered), int(used))
