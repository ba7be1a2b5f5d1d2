"""The whole run: start each server in a child process, measure, collect."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bench import crowd, flood, lockstep, micro, peer, resume, scenarios, swarm
from bench import rooms as rooms_bench
from bench import store as store_bench
from bench.loadgen import BenchError
from bench.redis_server import RedisServer
from bench.servers import ROOT, TEST_KEY
from socket_chat import crypto as crypto_utils
from socket_chat import protocol

PLAIN, UNBATCHED, CHAT = "plain", "chat-unbatched", "chat"
SMALL_STACKS = "chat, 256 KiB thread stacks"
SMALL_STACK_SIZE = 256 * 1024
START_TIMEOUT = 15.0  # seconds for a server process to say its port


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or ``--quick``."""

    sizes: dict[str, tuple[int, ...]]  # room sizes for each server kind
    senders: tuple[int, ...]
    handshakes: int
    flat_deliveries: int  # per flat-out run, roughly
    paced_seconds: float
    timeout: float  # per measurement
    micro_repeat: int
    rsa_repeat: int
    stack_room: int  # room size for the memory run with small thread stacks
    cluster_room: int  # room size for the cluster runs
    cluster_senders: int
    lockstep_deliveries: int = 20_000  # per lockstep run, roughly (bench/lockstep.py)
    lockstep_least: int = 100  # messages per lockstep run, at least
    lockstep_rooms: tuple[int, ...] = ()  # lockstep in rooms of these sizes too, beside those of `sizes`
    crowd: crowd.CrowdPlan = crowd.NO_CROWD  # rooms of thousands (bench/crowd.py)
    flood_seconds: float = 10.0  # per setup of the handshake flood (bench/flood.py)
    swarm_seconds: float = 10.0  # per setup of the flood from 200 addresses (bench/swarm.py)
    store: store_bench.StorePlan = store_bench.FULL_STORE  # the history store on and off, /search (bench/store.py)
    peer: peer.PeerPlan = peer.NO_PEER  # the IRC server beside ours (bench/peer.py)
    rooms: rooms_bench.RoomsPlan = rooms_bench.FULL_ROOMS  # one room of many while others chat (bench/rooms.py)
    resume: resume.ResumePlan = resume.FULL_RESUME  # connections resumed by a ticket (bench/resume.py)


FULL = Plan(
    sizes={PLAIN: (10, 100, 1000), UNBATCHED: (10, 100), CHAT: (10, 100, 1000)},
    senders=(1, 10),
    handshakes=200,
    flat_deliveries=100_000,
    paced_seconds=5.0,
    timeout=120.0,
    micro_repeat=20_000,
    rsa_repeat=100,
    stack_room=100,
    cluster_room=100,
    cluster_senders=10,
    lockstep_rooms=(501,),
    crowd=crowd.FULL_CROWD,
    peer=peer.FULL_PEER,
)
QUICK = Plan(
    sizes={PLAIN: (10, 50), UNBATCHED: (10,), CHAT: (10, 50)},
    senders=(1, 5),
    handshakes=10,
    flat_deliveries=2_000,
    paced_seconds=0.3,
    timeout=30.0,
    micro_repeat=2_000,
    rsa_repeat=10,
    stack_room=10,
    cluster_room=20,
    cluster_senders=4,
    lockstep_deliveries=200,
    lockstep_least=10,
    crowd=crowd.QUICK_CROWD,
    flood_seconds=2.0,
    swarm_seconds=2.0,
    store=store_bench.QUICK_STORE,
    peer=peer.QUICK_PEER,
    rooms=rooms_bench.QUICK_ROOMS,
    resume=resume.QUICK_RESUME,
)


class ClusterSetup(NamedTuple):
    name: str
    processes: int  # chat server processes, the clients dealt to them in turn
    clustered: bool  # with --cluster (else one server alone: the baseline)


CLUSTER_SETUPS = (
    ClusterSetup("one server alone", 1, False),
    ClusterSetup("one server, clustered", 1, True),
    ClusterSetup("two servers, clustered", 2, True),
)


@dataclass
class ClusterRun:
    """One cluster setup's flat-out fan-out (its server_cpu: all its servers')."""

    setup: ClusterSetup
    fan: scenarios.FanOutResult
    redis_cpu: float  # CPU seconds redis-server used during the run


@dataclass
class Results:
    handshakes: dict[tuple[str, int], scenarios.HandshakeResult] = field(default_factory=dict)
    fanout: list[tuple[str, scenarios.FanOutResult]] = field(default_factory=list)
    idle_rss_kib: dict[str, int] = field(default_factory=dict)
    room_rss_kib: dict[tuple[str, int], int] = field(default_factory=dict)
    costs_us: dict[str, float] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    cluster: list[ClusterRun] = field(default_factory=list)
    cluster_skipped: str | None = None  # why there are no cluster runs
    lockstep: list[lockstep.LockstepResult] = field(default_factory=list)
    crowd: crowd.CrowdResults = field(default_factory=crowd.CrowdResults)
    flood: list[flood.FloodRun] = field(default_factory=list)
    swarm: list[swarm.SwarmRun] = field(default_factory=list)
    store: store_bench.StoreResults = field(default_factory=store_bench.StoreResults)
    peer: peer.PeerResults = field(default_factory=peer.PeerResults)
    rooms: rooms_bench.RoomsResults = field(default_factory=rooms_bench.RoomsResults)
    resume: resume.ResumeResults = field(default_factory=resume.ResumeResults)
    errors: list[str] = field(default_factory=list)


class ServerProcess:
    """``python -m bench.servers KIND`` as a child; ``address`` once listening."""

    def __init__(self, kind: str, *options: str) -> None:
        self.kind = kind
        self.writer_tid: int | None = None  # the history store's writer thread, with --store
        self.handshakes_tid: int | None = None  # a chat server's handshake thread (server/handshakes.py)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", kind, *options],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both are pipes
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.address = ("127.0.0.1", self._read_port())

    def _read_port(self) -> int:
        with selectors.DefaultSelector() as selector:
            selector.register(self.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT):
                self.stop()
                raise BenchError(f"the {self.kind} server did not start")
        line = self.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise BenchError(f"the {self.kind} server said {line!r}")
        words = line.split()
        named = dict(zip(words[2::2], words[3::2], strict=False))  # NAME VALUE pairs
        if "WRITER" in named:  # with --store: its writer thread (bench/store.py)
            self.writer_tid = int(named["WRITER"])
        if "HANDSHAKES" in named:
            self.handshakes_tid = int(named["HANDSHAKES"])
        return int(words[1])

    def rss_kib(self) -> int:
        return scenarios.rss_kib(self.proc.pid)

    def stop(self) -> None:
        self.stdin.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def run(plan: Plan, progress=print) -> Results:
    results = Results()
    progress("raw costs and profiles")
    measure_costs(plan, results)
    for kind in (PLAIN, UNBATCHED, CHAT):
        if kind in (PLAIN, CHAT):
            guarded(results, f"{kind} handshakes", functools.partial(measure_handshakes, plan, kind, results), progress)
        for members in plan.sizes[kind]:
            guarded(
                results,
                f"{kind} room of {members}",
                functools.partial(measure_room, plan, kind, members, results),
                progress,
            )
    for members in plan.lockstep_rooms:
        for kind in (PLAIN, CHAT):
            guarded(
                results,
                f"{kind} room of {members}, lockstep",
                functools.partial(measure_room, plan, kind, members, results, fan_out=False),
                progress,
            )
    guarded(
        results,
        "peer: the IRC server (ngircd over TLS) beside ours",
        lambda: peer.measure(plan.peer, results.peer, functools.partial(ServerProcess, CHAT), progress, results.errors),
        progress,
    )
    guarded(
        results,
        f"{SMALL_STACKS}, room of {plan.stack_room}",
        functools.partial(measure_memory, plan, plan.stack_room, results),
        progress,
    )
    guarded(results, "cluster: redis-server", lambda: measure_cluster(plan, results, progress), progress)
    guarded(
        results,
        "crowd: rooms of thousands, several load generator processes",
        lambda: crowd.measure(
            plan.crowd, results.crowd, functools.partial(ServerProcess, CHAT), progress, results.errors
        ),
        progress,
    )
    guarded(results, "handshake flood from one address", lambda: measure_flood(plan, results), progress)
    guarded(
        results,
        "handshake flood from 200 addresses, and a person",
        lambda: results.swarm.extend(swarm.measure(plan.swarm_seconds)),
        progress,
    )
    guarded(
        results,
        "the history store on and off; /search",
        lambda: store_bench.measure(plan.store, results.store, functools.partial(ServerProcess, CHAT), progress),
        progress,
    )
    guarded(
        results,
        "rooms: one room of many while others chat; joins",
        lambda: rooms_bench.measure(plan.rooms, results.rooms, functools.partial(ServerProcess, CHAT), progress),
        progress,
    )
    guarded(
        results,
        "resumption: connections and a reconnect storm with tickets and without",
        lambda: resume.measure_into(plan.resume, results.resume),
        progress,
    )
    return results


def measure_flood(plan: Plan, results: Results) -> None:
    """bench/flood.py against a server with the per-address limits off, then on."""
    for setup, admission_on in flood.SETUPS:
        with ServerProcess(CHAT, *(["--admission"] if admission_on else [])) as server:
            results.flood.append(flood.flood(server.address, plan.flood_seconds, server.proc.pid, setup))


def guarded(results: Results, what: str, step, progress) -> None:
    """Run one step; a failure is recorded and the run goes on."""
    progress(what)
    begin = time.monotonic()
    try:
        step()
    except (BenchError, OSError) as exc:
        results.errors.append(f"{what}: {exc}")
        progress(f"  FAILED: {exc}")
    progress(f"  {time.monotonic() - begin:.1f} s")


def measure_costs(plan: Plan, results: Results) -> None:
    key = crypto_utils.import_private_key(TEST_KEY.read_bytes())
    results.costs_us.update(micro.record_costs(plan.micro_repeat))
    results.costs_us.update(micro.handshake_costs(key, plan.rsa_repeat))
    identity = protocol.ServerIdentity.of(key)
    messages = plan.micro_repeat // 4
    for batch in (1, 16, 64):
        us = micro.per_call_us(micro.writer_sealing(batch, messages), 1) / messages
        results.costs_us[f"writer: seal a message, {batch} per record"] = us
    results.profiles["a handshake (both sides, in process), by cumulative time"] = micro.profile(
        lambda: micro.handshake_in_process(identity), plan.rsa_repeat, top=24, order="cumtime"
    )
    results.profiles["the writer, one record per message (before)"] = micro.profile(
        micro.writer_sealing(1, messages), 1
    )
    results.profiles["the writer, 64 messages per record (after)"] = micro.profile(
        micro.writer_sealing(64, messages), 1
    )


def measure_handshakes(plan: Plan, kind: str, results: Results) -> None:
    with ServerProcess(kind) as server:
        for concurrency in (1, 8):
            count = plan.handshakes * (1 if concurrency == 1 else 2)
            cpu = scenarios.cpu_seconds(server.proc.pid)
            crypto = scenarios.thread_cpu_seconds(server.proc.pid, server.handshakes_tid)
            result = scenarios.measure_handshakes(server.address, kind == PLAIN, count, concurrency, plan.timeout)
            result.server_cpu_us = (scenarios.cpu_seconds(server.proc.pid) - cpu) / count * 1e6
            after = scenarios.thread_cpu_seconds(server.proc.pid, server.handshakes_tid)
            result.handshake_thread_us = (after - crypto) / count * 1e6
            results.handshakes[(kind, concurrency)] = result


def measure_room(plan: Plan, kind: str, members: int, results: Results, fan_out: bool = True) -> None:
    """A fresh server: idle RSS, fill the room, RSS, lockstep (chat and the
    floor), then the fan-out runs."""
    with ServerProcess(kind) as server:
        results.idle_rss_kib.setdefault(kind, server.rss_kib())
        idle = server.rss_kib()
        gen = scenarios.fill_room(server.address, kind == PLAIN, members, fill_timeout(plan, members))
        try:
            results.room_rss_kib[(kind, members)] = server.rss_kib() - idle
            if kind in (CHAT, PLAIN):
                messages = lockstep.message_count(members - 1, plan.lockstep_deliveries, plan.lockstep_least)
                results.lockstep.append(lockstep.run(gen, kind, server.proc.pid, messages, plan.timeout))
            for senders in plan.senders if fan_out else ():
                senders = min(senders, members)
                results.fanout.append((kind, with_cpu([server], functools.partial(run_flat_out, plan, gen, senders))))
                results.fanout.append(
                    (
                        kind,
                        with_cpu(
                            [server],
                            functools.partial(scenarios.run_paced, gen, senders, plan.paced_seconds, plan.timeout),
                        ),
                    )
                )
        finally:
            gen.close_all()


def run_flat_out(plan: Plan, gen, senders: int) -> scenarios.FanOutResult:
    """About ``plan.flat_deliveries`` deliveries, at least 10 messages a sender."""
    each = max(10, math.ceil(plan.flat_deliveries / (len(gen.clients) - 1) / senders))
    window = max(1, min(64, 512 // senders))
    return scenarios.run_flat_out(gen, senders, each, window, plan.timeout)


def with_cpu(servers: list[ServerProcess], run) -> scenarios.FanOutResult:
    """``run()``'s result, with the CPU time the servers (all together) and
    the load generator spent on it."""

    def servers_cpu() -> float:
        return sum(scenarios.cpu_seconds(server.proc.pid) for server in servers)

    server_before, own_before = servers_cpu(), scenarios.own_cpu_seconds()
    result = run()
    result.server_cpu = servers_cpu() - server_before
    result.loadgen_cpu = scenarios.own_cpu_seconds() - own_before
    return result


def fill_timeout(plan: Plan, members: int) -> float:
    """Filling a room is quadratic: each joiner is announced to all before it."""
    return plan.timeout + 0.15 * members


def measure_memory(plan: Plan, members: int, results: Results) -> None:
    """RSS growth with smaller thread stacks (threading.stack_size)."""
    with ServerProcess(CHAT, "--stack-size", str(SMALL_STACK_SIZE)) as server:
        idle = server.rss_kib()
        results.idle_rss_kib[SMALL_STACKS] = idle
        gen = scenarios.fill_room(server.address, False, members, fill_timeout(plan, members))
        results.room_rss_kib[(SMALL_STACKS, members)] = server.rss_kib() - idle
        gen.close_all()


def cluster_missing() -> str | None:
    """Why the cluster cannot be measured here, or None if it can."""
    if shutil.which("redis-server") is None:
        return "redis-server not installed"
    if importlib.util.find_spec("redis") is None:
        return "the redis package not installed (pip install -r requirements-cluster.txt)"
    return None


def measure_cluster(plan: Plan, results: Results, progress) -> None:
    """The same flat-out fan-out in each of CLUSTER_SETUPS, on fresh server
    processes each time, all clustered ones on one redis-server."""
    results.cluster_skipped = cluster_missing()
    if results.cluster_skipped:
        progress(f"  skipped: {results.cluster_skipped}")
        return
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder, RedisServer(Path(folder)) as redis_server:
        for setup in CLUSTER_SETUPS:
            guarded(
                results,
                f"cluster: {setup.name}, room of {plan.cluster_room}",
                functools.partial(measure_cluster_setup, plan, setup, redis_server, results),
                progress,
            )


def measure_cluster_setup(plan: Plan, setup: ClusterSetup, redis_server: RedisServer, results: Results) -> None:
    empty_redis(redis_server.url)  # the last setup's stream and names must not feed this one
    options = ("--cluster", redis_server.url) if setup.clustered else ()
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(ServerProcess(CHAT, *options)) for _ in range(setup.processes)]
        gen = scenarios.fill_rooms(
            [server.address for server in servers], False, plan.cluster_room, fill_timeout(plan, plan.cluster_room)
        )
        redis_process = redis_server.process
        assert redis_process is not None  # started by the caller's with
        try:
            redis_before = scenarios.cpu_seconds(redis_process.pid)
            fan = with_cpu(servers, lambda: run_flat_out(plan, gen, plan.cluster_senders))
            redis_cpu = scenarios.cpu_seconds(redis_process.pid) - redis_before
        finally:
            gen.close_all()
    results.cluster.append(ClusterRun(setup, fan, redis_cpu))
    if fan.lost or fan.duplicated or fan.reordered:  # one order for all is the cluster's promise
        results.errors.append(
            f"cluster: {setup.name}: {fan.lost} lost, {fan.duplicated} duplicated, {fan.reordered} out of order"
        )


def empty_redis(url: str) -> None:
    """FLUSHALL on the bench's own redis-server."""
    import redis  # only here: the rest of the bench runs without it

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.flushall()
    except redis.RedisError as exc:
        raise BenchError(f"FLUSHALL failed: {exc}") from None
    finally:
        client.close()


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import platform

    import Cryptodome

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "CPU": f"{model}, {os.cpu_count()} logical CPUs",
        "memory": _mem_total(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "pycryptodomex": Cryptodome.__version__,
    }


def _mem_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) // 1024} MiB"
    return "unknown"
