"""One person, several devices (chat/registrations.py): the rules of the
table, the same in memory and in a cluster's Redis (server/cluster_names.py),
the session's ``/device`` messages (chat/member.py) and the store's
``devices`` table (server/store.py)."""

from __future__ import annotations

import base64

import pytest

from socket_chat import protocol
from socket_chat.chat.member import DEVICE_ADDED, DEVICE_REFUSED, DEVICE_REMOVED, DEVICES_NEED_KEY, Stage
from socket_chat.chat.registrations import MAX_DEVICES, Device, DeviceAdded, Registrations, Taken
from socket_chat.chat.room import Room
from socket_chat.crypto import PersonKey
from socket_chat.crypto.person import ssh_key_blob
from socket_chat.server.store import SqliteStore
from tests.test_limits import FakeClock
from tests.test_registrations import ANN, BOB, REFUSED, person

CAT = PersonKey.from_seed(bytes(range(2, 34)))
DAN = PersonKey.from_seed(bytes(range(3, 35)))


def ssh_line(key: PersonKey, comment: str = "laptop") -> str:
    """``key`` as a line of an OpenSSH .pub file."""
    return f"ssh-ed25519 {base64.b64encode(ssh_key_blob(key.public_bytes)).decode()} {comment}"


@pytest.fixture(params=["memory", "redis"])
def registry(request):
    """``registry(cap)``: a table of registered names, in memory or in a
    real redis-server (each test runs against both: they must agree)."""
    if request.param == "memory":
        yield lambda cap=5: Registrations(cap=cap, clock=FakeClock())
        return
    from socket_chat.server import cluster
    from socket_chat.server.cluster_names import RedisRegistrations

    redis_server = request.getfixturevalue("redis_server")
    joined = cluster.RedisCluster.connect(redis_server.url)
    try:
        yield lambda cap=5: RedisRegistrations(joined, cap=cap)
    finally:
        joined.close()


def test_a_device_uses_its_owners_names_and_registers_for_them_within_their_cap(registry):
    table = registry(2)
    assert table.take("Ann", ANN.fingerprint) is Taken.REGISTERED
    assert not table.may_use("Ann", BOB.fingerprint)
    assert table.add_device(ANN.fingerprint, BOB.fingerprint) is DeviceAdded.ADDED
    assert table.owner_of(BOB.fingerprint) == ANN.fingerprint and table.owner_of(ANN.fingerprint) == ANN.fingerprint
    assert table.may_use("ＡＮＮ", BOB.fingerprint) and table.take("ann", BOB.fingerprint) is Taken.RENEWED
    assert table.take("Annie", BOB.fingerprint) is Taken.REGISTERED
    assert table.lookup("Annie").fingerprint == ANN.fingerprint  # the owner's, from the device
    assert table.take("Anna", ANN.fingerprint) is Taken.AT_CAP  # one cap for the person
    assert [d.fingerprint for d in table.devices_of(ANN.fingerprint)] == [BOB.fingerprint]
    assert not table.may_use("Ann", CAT.fingerprint) and not table.may_use("Ann", None)


def test_only_an_owner_adds_devices_and_a_device_has_none_of_its_own(registry):
    table = registry()
    assert table.add_device(ANN.fingerprint, BOB.fingerprint) is DeviceAdded.NO_NAMES  # no one's owner yet
    table.take("Ann", ANN.fingerprint)
    table.take("Cat", CAT.fingerprint)
    assert table.add_device(ANN.fingerprint, ANN.fingerprint) is DeviceAdded.SELF
    assert table.add_device(ANN.fingerprint, BOB.fingerprint) is DeviceAdded.ADDED
    assert table.add_device(ANN.fingerprint, BOB.fingerprint) is DeviceAdded.ALREADY
    assert table.add_device(BOB.fingerprint, DAN.fingerprint) is DeviceAdded.NOT_OWNER  # a device adds none
    assert table.add_device(CAT.fingerprint, BOB.fingerprint) is DeviceAdded.OTHERS  # Ann's, not Cat's to take
    assert table.add_device(CAT.fingerprint, DAN.fingerprint) is DeviceAdded.ADDED
    assert table.add_device(ANN.fingerprint, CAT.fingerprint) is DeviceAdded.HAS_DEVICES  # no chains
    assert not table.remove_device(CAT.fingerprint, BOB.fingerprint)  # only its owner removes it
    assert table.remove_device(ANN.fingerprint, BOB.fingerprint)
    assert not table.may_use("Ann", BOB.fingerprint) and table.devices_of(ANN.fingerprint) == []
    for n in range(MAX_DEVICES):
        assert table.add_device(ANN.fingerprint, f"SHA256:{n:043d}") is DeviceAdded.ADDED
    assert table.add_device(ANN.fingerprint, BOB.fingerprint) is DeviceAdded.TOO_MANY


def test_a_device_keeps_the_names_it_registered_itself_before(registry):
    table = registry()
    table.take("Ann", ANN.fingerprint)
    table.take("Bob", BOB.fingerprint)
    table.add_device(ANN.fingerprint, BOB.fingerprint)
    assert table.may_use("Bob", BOB.fingerprint) and table.take("Bob", BOB.fingerprint) is Taken.RENEWED
    assert not table.may_use("Bob", ANN.fingerprint)  # a device's old names stay its own


def test_device_messages_from_a_client_with_the_name(tmp_path):
    room, table = Room(history_size=0), Registrations(clock=FakeClock())
    ann = person(room, table, ANN)
    ann.send(protocol.Username("Ann"))
    assert ann.send(protocol.DeviceAdd(ssh_line(BOB))) == [protocol.Notice(DEVICE_ADDED.format(device=BOB.fingerprint))]
    assert ann.send(protocol.DeviceAdd(f"  {BOB.fingerprint} ")) == [
        protocol.Notice(DEVICE_REFUSED[DeviceAdded.ALREADY].format(device=BOB.fingerprint))
    ]
    [listed] = ann.send(protocol.DeviceListRequest())
    assert listed.owner == ANN.fingerprint and [f for f, _ in listed.devices()] == [BOB.fingerprint]
    [bad] = ann.send(protocol.DeviceAdd("SHA256:short"))
    assert isinstance(bad, protocol.ErrorNotice) and "is not a fingerprint" in bad.text
    [bad] = ann.send(protocol.DeviceAdd("ssh-rsa AAAAB3NzaC1yc2E"))
    assert isinstance(bad, protocol.ErrorNotice) and bad.text.startswith("That key cannot be used")

    ann.session.leave()
    phone = person(room, table, BOB)  # the device, while the owner is away
    assert isinstance(phone.send(protocol.Username("ann"))[0], protocol.Welcome)
    [from_device] = phone.send(protocol.DeviceListRequest())
    assert from_device == listed  # the owner's list, seen from a device
    [refused] = phone.send(protocol.DeviceAdd(CAT.fingerprint))
    assert refused == protocol.ErrorNotice(
        DEVICE_REFUSED[DeviceAdded.NOT_OWNER].format(device=CAT.fingerprint, owner=ANN.fingerprint)
    )

    back = person(room, table, ANN)
    back.send(protocol.Username("Annie"))
    assert back.send(protocol.DeviceRemove(BOB.fingerprint)) == [
        protocol.Notice(DEVICE_REMOVED.format(device=BOB.fingerprint))
    ]
    assert phone.session.stage is Stage.CHATTING  # a removal disconnects no one
    phone.session.leave()
    again = person(room, table, BOB)
    assert again.send(protocol.Username("Ann")) == [REFUSED]  # ...but stops the next join


def test_a_guest_has_no_devices_and_an_older_server_is_not_asked():
    room, table = Room(history_size=0), Registrations(clock=FakeClock())
    guest = person(room, table, None)
    guest.send(protocol.Username("Zed"))
    for request in (protocol.DeviceAdd(BOB.fingerprint), protocol.DeviceListRequest()):
        assert guest.send(request) == [protocol.ErrorNotice(DEVICES_NEED_KEY)]
    naming = person(room, table, ANN)
    assert naming.send(protocol.DeviceListRequest()) == [protocol.ErrorNotice("Choose a username first.")]


def test_devices_are_stored_and_read_back_and_a_removal_is_too(tmp_path):
    path = tmp_path / "history.sqlite3"
    opened = SqliteStore.open(path)
    table = Registrations(opened)
    table.take("Ann", ANN.fingerprint)
    table.add_device(ANN.fingerprint, BOB.fingerprint)
    table.add_device(ANN.fingerprint, CAT.fingerprint)
    table.remove_device(ANN.fingerprint, CAT.fingerprint)
    opened.close()
    reopened = SqliteStore.open(path)
    try:
        [device] = reopened.devices()
        assert isinstance(device, Device) and (device.fingerprint, device.owner) == (BOB.fingerprint, ANN.fingerprint)
        assert Registrations(reopened).may_use("Ann", BOB.fingerprint)
    finally:
        reopened.close()


def test_the_device_list_round_trips_and_skips_garbled_entries():
    listed = protocol.DeviceList.of(ANN.fingerprint, [(BOB.fingerprint, 1764100000), (CAT.fingerprint, 7)])
    assert protocol.decode_message(protocol.encode_message(listed)).devices() == [
        (BOB.fingerprint, 1764100000),
        (CAT.fingerprint, 7),
    ]
    assert protocol.DeviceList("x", "no tab\nA\tx\nB\t3").devices() == [("B", 3)]


def test_the_device_messages_are_protocol_mds_test_vector():
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "PROTOCOL.md").read_text(encoding="utf-8")
    vector = dict(re.findall(r"^(device_\w+) = ([0-9a-f]+)$", text, re.MULTILINE))
    owner = "SHA256:bbXpuKG6zhzdmnxq256TlqzFBzRl2f6OOg722cYNbU8"
    expected = {
        "device_add": protocol.DeviceAdd(owner),
        "device_remove": protocol.DeviceRemove(owner),
        "device_list_request": protocol.DeviceListRequest(),
        "device_list": protocol.DeviceList.of(owner, [("SHA256:" + "B" * 43, 1764100000)]),
    }
    assert set(vector) == set(expected)
    for name, message in expected.items():
        assert protocol.encode_message(message).hex() == vector[name]
        assert protocol.decode_message(bytes.fromhex(vector[name])) == message
