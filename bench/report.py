"""The results as a table, as docs/benchmarks.md and as a plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from bench import crowd, flood, lockstep, micro
from bench.runner import CHAT, PLAIN, UNBATCHED, Results
from socket_chat.chat import presence

KIND_NAMES = {
    CHAT: "chat",
    UNBATCHED: "chat, unbatched (before)",
    PLAIN: "plaintext floor",
}
SECTIONS = (
    "## Targets",
    "## Handshake",
    "## Fan-out",
    "## Lockstep",
    "## Cluster",
    "## Crowd",
    "## Memory",
    "## Raw costs",
    "## Profiles",
    "## Machine",
)


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def floor_rate(results: Results, fan) -> float | None:
    for kind, other in results.fanout:
        if kind == PLAIN and (other.members, other.senders, other.paced) == (fan.members, fan.senders, fan.paced):
            return other.per_second
    return None


def handshake_table(results: Results) -> list[str]:
    rows = [
        (
            KIND_NAMES[kind],
            at_once,
            r.count,
            _ms(r.p50_ms),
            _ms(r.p99_ms),
            f"{r.per_second:.0f}",
            _ms(r.server_cpu_us / 1000),
        )
        for (kind, at_once), r in sorted(results.handshakes.items(), key=lambda item: item[0][0] == PLAIN)
    ]
    header = ("server", "at once", "connections", "p50 ms", "p99 ms", "connections/s", "server CPU ms / handshake")
    return _table(header, rows)


def fanout_table(results: Results) -> list[str]:
    rows = []
    for kind, fan in sorted(results.fanout, key=lambda kf: (kf[1].paced, kf[1].members, kf[1].senders, kf[0])):
        floor = floor_rate(results, fan)
        ratio = f"{fan.per_second / floor:.2f}" if floor and not fan.paced else ""
        rows.append(
            (
                KIND_NAMES[kind],
                fan.members,
                fan.senders,
                "paced 10/s" if fan.paced else "flat out",
                fan.messages,
                fan.deliveries,
                f"{fan.per_second:,.0f}" if not fan.paced else "",
                ratio,
                _ms(fan.latency(0.5)),
                _ms(fan.latency(0.99)),
                _ms(fan.latency_max),
                fan.lost,
                fan.duplicated,
                _cpu_per_k(fan.server_cpu, fan),
                _cpu_per_k(fan.loadgen_cpu, fan),
            )
        )
    return _table(
        (
            "server",
            "clients",
            "senders",
            "mode",
            "messages",
            "deliveries",
            "deliveries/s",
            "÷ floor",
            "p50 ms",
            "p99 ms",
            "max ms",
            "lost",
            "dup",
            "server CPU ms /1k",
            "loadgen CPU ms /1k",
        ),
        rows,
    )


def _cpu_per_k(seconds: float, fan) -> str:
    """CPU milliseconds per thousand deliveries."""
    return f"{1e6 * seconds / fan.deliveries:.0f}" if fan.deliveries else ""


def _cluster_alone(results: Results):
    """The cluster run of one server alone (no cluster), or None."""
    return next((run for run in results.cluster if not run.setup.clustered), None)


def cluster_baseline(results: Results) -> float | None:
    """Deliveries/s of the one server alone, in this run."""
    alone = _cluster_alone(results)
    return alone.fan.per_second if alone else None


def cluster_table(results: Results) -> list[str]:
    if results.cluster_skipped:
        return [f"skipped: {results.cluster_skipped}"]
    baseline = cluster_baseline(results)
    rows = []
    for run in results.cluster:
        fan = run.fan
        rows.append(
            (
                run.setup.name,
                run.setup.processes,
                fan.members,
                fan.senders,
                fan.messages,
                fan.deliveries,
                f"{fan.per_second:,.0f}",
                f"{fan.per_second / baseline:.2f}" if baseline else "",
                fan.lost,
                fan.duplicated,
                _cpu_per_k(fan.server_cpu, fan),
                _cpu_per_k(run.redis_cpu, fan) if run.setup.clustered else "",
                _cpu_per_k(fan.loadgen_cpu, fan),
            )
        )
    return _table(
        (
            "setup",
            "server processes",
            "clients",
            "senders",
            "messages",
            "deliveries",
            "delivered/s",
            "÷ one server alone",
            "lost",
            "dup",
            "servers CPU ms /1k",
            "Redis CPU ms /1k",
            "loadgen CPU ms /1k",
        ),
        rows,
    )


def cluster_finding(results: Results) -> list[str]:
    """What the cluster figures mean on this machine, in this run's figures."""
    alone = _cluster_alone(results)
    runs = {run.setup.processes: run for run in results.cluster if run.setup.clustered}
    if not (alone and alone.fan.per_second and 1 in runs and 2 in runs and runs[1].fan.seconds and runs[2].fan.seconds):
        return []
    one, two, cpus = runs[1], runs[2], os.cpu_count() or 1
    return [
        (
            f"What this means here: one machine with {cpus} logical CPUs runs the load generator (one "
            "process, which decrypts for every client), redis-server and the chat servers, all at once. "
            f"Through Redis, one server delivers {one.fan.per_second / alone.fan.per_second:.2f}× what it "
            "does alone: each line goes to Redis and back before anyone gets it, one more trip through "
            f"redis-py on each side, and the server used {_cpu_per_k(one.fan.server_cpu, one.fan)} ms of CPU "
            f"per thousand deliveries against {_cpu_per_k(alone.fan.server_cpu, alone.fan)} alone. Two "
            f"servers deliver {two.fan.per_second / alone.fan.per_second:.2f}× one server alone and "
            f"{two.fan.per_second / one.fan.per_second:.2f}× one clustered server. {_cores_busy(one, 'one')} "
            f"{_cores_busy(two, 'two')} {_second_server(one, two)} So on this machine the figures cannot "
            "tell how the cluster scales: a server process runs its Python on one core at a time (one "
            "GIL), and a second process has no core of its own here, only what the first leaves of the "
            "one the load generator and Redis need too. The point of the cluster is more machines (or "
            "cores): each server then has CPU of its own for its own clients' encryption, where a "
            "server's time goes, and only plaintext stream entries are shared. What these figures do "
            "show is that every line reached every other member once, in one order, across servers, "
            "and what going through Redis costs."
        )
    ]


def _cores_busy(run, servers: str) -> str:
    """How many CPUs each process kept busy during a cluster run."""
    fan = run.fan
    total = (fan.server_cpu + run.redis_cpu + fan.loadgen_cpu) / fan.seconds
    return (
        f"With {servers} clustered, the servers kept {fan.server_cpu / fan.seconds:.2f} CPUs busy, "
        f"the load generator {fan.loadgen_cpu / fan.seconds:.2f} and Redis "
        f"{run.redis_cpu / fan.seconds:.2f}: {total:.2f} in all."
    )


def _second_server(one, two) -> str:
    """Whether the second server process brought CPU time, or less work per delivery."""
    busy_one, busy_two = one.fan.server_cpu / one.fan.seconds, two.fan.server_cpu / two.fan.seconds
    per_k = (
        f"{_cpu_per_k(two.fan.server_cpu, two.fan)} ms of server CPU per thousand deliveries "
        f"against {_cpu_per_k(one.fan.server_cpu, one.fan)}"
    )
    if busy_two <= 1.15 * busy_one:
        same = f"The two servers together kept no more CPU busy than the one ({busy_two:.2f} against {busy_one:.2f})"
        if two.fan.per_second <= one.fan.per_second:
            return f"{same}, and used {per_k}."
        return (
            f"{same}: what they gained did not come from a second core but from less work per "
            f"delivery ({per_k}); each has half the clients and their threads."
        )
    return (
        f"The two servers together kept more CPU busy than the one ({busy_two:.2f} against "
        f"{busy_one:.2f}), taken from what the load generator and Redis left idle ({per_k})."
    )


def memory_table(results: Results) -> list[str]:
    rows = [
        (
            KIND_NAMES.get(kind, kind),
            results.idle_rss_kib.get(kind, ""),
            members,
            f"{grown:,}",
            f"{grown / members:.0f}",
        )
        for (kind, members), grown in results.room_rss_kib.items()
    ]
    return _table(("server", "idle RSS KiB", "clients", "RSS growth KiB", "KiB per client"), rows)


def costs_table(results: Results) -> list[str]:
    return _table(("operation", "µs"), [(name, f"{us:,.1f}") for name, us in results.costs_us.items()])


def _find(results: Results, kind: str, members: int, senders: int, paced: bool):
    for k, fan in results.fanout:
        if (k, fan.members, fan.senders, fan.paced) == (kind, members, senders, paced):
            return fan
    return None


def targets(results: Results) -> list[tuple[str, str, str]]:
    """(target, what was measured, met?) for each of issue 5's targets."""
    rows = []
    big = [fan for kind, fan in results.fanout if kind == CHAT and fan.members >= 1000]
    if big:
        bad = sum(f.lost + f.duplicated for f in big)
        rows.append(
            (
                "1,000 clients, all receiving, nothing lost",
                f"{len(big)} runs at 1,000 clients, {sum(f.deliveries for f in big):,} deliveries, "
                f"{bad} lost or duplicated",
                _yes(bad == 0 and not results.errors),
            )
        )
    seq = results.handshakes.get((CHAT, 1))
    if seq:
        rows.append(("handshake p50 < 5 ms", f"{_ms(seq.p50_ms)} ms (sequential)", _yes(seq.p50_ms < 5)))
    rows += _handshake_cpu_targets(results)
    for senders in (1, 10):
        fan, floor = _find(results, CHAT, 100, senders, False), _find(results, PLAIN, 100, senders, False)
        if fan and floor:
            ratio = fan.per_second / floor.per_second
            rows.append(
                (
                    f"flat out, 100 clients, {senders} sender(s): ≥ 0.5 × plaintext",
                    f"{fan.per_second:,.0f} / {floor.per_second:,.0f} deliveries/s = {ratio:.2f}",
                    _yes(ratio >= 0.5),
                )
            )
    paced = _find(results, CHAT, 100, 10, True)
    if paced:
        rows.append(
            (
                "p99 < 50 ms, 100 clients, 10 paced senders",
                f"{_ms(paced.latency(0.99))} ms",
                _yes(paced.latency(0.99) < 50),
            )
        )
    for (kind, members), grown in results.room_rss_kib.items():
        if kind == CHAT and members >= 100:
            rows.append(
                (
                    f"RSS < 100 KiB per idle client ({members:,})",
                    f"{grown / members:.0f} KiB",
                    _yes(grown / members < 100),
                )
            )
    rows += lockstep.targets(results.lockstep, results.costs_us, results.room_rss_kib, CHAT, PLAIN)
    rows += cluster_cpu_target(results)
    rows += crowd.targets(results.crowd, results.errors, presence.BUSY_FROM, presence.INTERVAL)
    return rows or [("(targets need the full run)", "", "")]


#: Issue 12, item 6: a clustered server's CPU per delivery against a lone one's.
CLUSTER_CPU_TARGET = 1.25


def cluster_cpu_target(results: Results) -> list[tuple[str, str, str]]:
    alone = _cluster_alone(results)
    one = next((run for run in results.cluster if run.setup.clustered and run.setup.processes == 1), None)
    if not (alone and one and alone.fan.deliveries and one.fan.deliveries and alone.fan.server_cpu):
        return []
    ratio = _cpu_ms_per_k(one.fan) / _cpu_ms_per_k(alone.fan)
    return [
        (
            f"one clustered server's CPU per delivery ≤ {CLUSTER_CPU_TARGET} × a lone server's",
            f"{_cpu_ms_per_k(one.fan):.1f} / {_cpu_ms_per_k(alone.fan):.1f} ms per 1,000 = {ratio:.2f}",
            _yes(ratio <= CLUSTER_CPU_TARGET),
        )
    ]


def _yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def print_tables(results: Results) -> None:
    for title, lines in (
        ("Targets", _table(("target", "measured", "met"), targets(results))),
        ("Handshake", handshake_table(results)),
        ("Fan-out", fanout_table(results)),
        ("Lockstep", lockstep.table(results.lockstep, results.costs_us, KIND_NAMES)),
        ("Cluster", cluster_table(results)),
        ("Crowd", [*_table(*crowd.fill_rows(results.crowd)), "", *_table(*crowd.heard_rows(results.crowd))]),
        ("Memory", memory_table(results)),
        ("Raw costs", costs_table(results)),
        ("Handshake flood from one address", flood.table(results.flood)),
    ):
        print(f"\n{title}")
        print("\n".join(lines))
    for error in results.errors:
        print(f"ERROR: {error}")


def write_json(results: Results, path: Path) -> None:
    """The figures, for tests and for comparing runs."""
    data = {
        "handshakes": [
            dict(
                kind=k,
                at_once=c,
                p50_ms=r.p50_ms,
                p99_ms=r.p99_ms,
                per_second=r.per_second,
                server_cpu_us=r.server_cpu_us,
            )
            for (k, c), r in results.handshakes.items()
        ],
        "fanout": [
            dict(
                kind=k,
                members=f.members,
                senders=f.senders,
                paced=f.paced,
                messages=f.messages,
                deliveries=f.deliveries,
                expected=f.expected,
                lost=f.lost,
                duplicated=f.duplicated,
                reordered=f.reordered,
                per_second=f.per_second,
                p50_ms=f.latency(0.5),
                server_cpu_s=f.server_cpu,
                loadgen_cpu_s=f.loadgen_cpu,
                p99_ms=f.latency(0.99),
                max_ms=f.latency_max,
            )
            for k, f in results.fanout
        ],
        "memory": [
            dict(kind=k, members=m, growth_kib=g, idle_kib=results.idle_rss_kib.get(k))
            for (k, m), g in results.room_rss_kib.items()
        ],
        "cluster": dict(skipped=results.cluster_skipped, runs=cluster_json(results)),
        "flood": flood.as_json(results.flood),
        "lockstep": [
            dict(
                kind=r.kind,
                receivers=r.receivers,
                messages=r.messages,
                deliveries=r.deliveries,
                lost=r.lost,
                duplicated=r.duplicated,
                server_cpu_us_per_delivery=r.cpu_us,
                p50_ms=r.latency(0.5),
                p99_ms=r.latency(0.99),
                context_switches=r.switches,
            )
            for r in results.lockstep
        ],
        "crowd": crowd.to_json(results.crowd),
        "costs_us": results.costs_us,
        "errors": results.errors,
    }
    path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n", encoding="utf-8")


def cluster_json(results: Results) -> list[dict]:
    baseline = cluster_baseline(results)
    return [_cluster_run_json(run, baseline) for run in results.cluster]


def _cluster_run_json(run, baseline: float | None) -> dict:
    fan = run.fan
    return dict(
        setup=run.setup.name,
        processes=run.setup.processes,
        clustered=run.setup.clustered,
        members=fan.members,
        senders=fan.senders,
        messages=fan.messages,
        deliveries=fan.deliveries,
        expected=fan.expected,
        lost=fan.lost,
        duplicated=fan.duplicated,
        reordered=fan.reordered,
        per_second=fan.per_second,
        ratio=fan.per_second / baseline if baseline else None,
        server_cpu_s=fan.server_cpu,
        redis_cpu_s=run.redis_cpu,
        loadgen_cpu_s=fan.loadgen_cpu,
    )


def plot(results: Results, path: Path) -> bool:
    """Latency (paced) and throughput (flat out) against the number of
    clients, for each server. False if matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    senders = max(f.senders for _, f in results.fanout)
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.2))
    for kind, style in ((CHAT, "o-"), (UNBATCHED, "s--"), (PLAIN, "^:")):
        paced = sorted(
            (f for k, f in results.fanout if k == kind and f.paced and f.senders == senders), key=lambda f: f.members
        )
        flat = sorted(
            (f for k, f in results.fanout if k == kind and not f.paced and f.senders == senders),
            key=lambda f: f.members,
        )
        if paced:
            xs = [f.members for f in paced]
            latency.plot(xs, [f.latency(0.99) for f in paced], style, label=f"{KIND_NAMES[kind]} p99")
            latency.plot(xs, [f.latency(0.5) for f in paced], style, alpha=0.4, label=f"{KIND_NAMES[kind]} p50")
        if flat:
            throughput.plot([f.members for f in flat], [f.per_second for f in flat], style, label=KIND_NAMES[kind])
    latency.set(
        xscale="log",
        yscale="log",
        xlabel="clients in the room",
        ylabel="end-to-end latency, ms",
        title=f"Latency, {senders} senders at 10 msg/s",
    )
    throughput.set(
        xscale="log",
        xlabel="clients in the room",
        ylabel="deliveries per second",
        title=f"Throughput, {senders} senders flat out",
    )
    for axes in (latency, throughput):
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _cost(results: Results, prefix: str) -> float:
    return next((us for name, us in results.costs_us.items() if name.startswith(prefix)), float("nan"))


def _handshake_cpu_targets(results: Results) -> list[tuple[str, str, str]]:
    """Server CPU per handshake against its own cryptography (issue 12: ≤ 1.2 ×)."""
    crypto = _cost(results, micro.SERVER_CRYPTO)
    rows = []
    for at_once in (1, 8):
        run = results.handshakes.get((CHAT, at_once))
        if run and not math.isnan(run.server_cpu_us) and crypto > 0:
            ratio = run.server_cpu_us / crypto
            rows.append(
                (
                    f"server CPU per handshake ({at_once} at once) ≤ 1.2 × its own cryptography",
                    f"{run.server_cpu_us / 1000:.2f} / {crypto / 1000:.2f} ms = {ratio:.2f}",
                    _yes(ratio <= 1.2),
                )
            )
    in_process = _cost(results, micro.SERVER_HANDSHAKE)
    if crypto > 0 and not math.isnan(in_process):
        rows.append(
            (
                "the same, its protocol side alone (in process)",
                f"{in_process / 1000:.2f} / {crypto / 1000:.2f} ms = {in_process / crypto:.2f}",
                _yes(in_process / crypto <= 1.2),
            )
        )
    return rows


def findings(results: Results) -> list[str]:
    """What the profile showed and what changed, in figures from this run."""
    seal, aes_new = _cost(results, micro.SEAL), _cost(results, micro.SEAL_AES_NEW)
    opened, aes_new_open = _cost(results, micro.OPEN), _cost(results, micro.OPEN_AES_NEW)
    seal_before, open_before = _cost(results, micro.SEAL_BEFORE), _cost(results, micro.OPEN_BEFORE)
    one, many = _cost(results, "writer: seal a message, 1 "), _cost(results, "writer: seal a message, 64 ")
    unwrap, whole = _cost(results, "RSA-3072 OAEP unwrap"), _cost(results, "whole handshake")
    lines = [
        f"- **The seal.** One `AES.new(key, MODE_GCM, nonce)` seal of a chat line costs {aes_new:.1f} µs "
        "in this run, most of it the key schedules, hash subkey and GHASH tables worked out again "
        "for every nonce. The record layer now makes those once per connection direction "
        "(aes_gcm.py: one AES-ECB call for E(J0) and the counter blocks, an XOR, pycryptodomex's own "
        f"GHASH; records byte for byte AES.new's): a seal costs {seal:.1f} µs "
        f"({aes_new / seal:.1f} × cheaper) and an open {opened:.1f} µs against {aes_new_open:.1f}. "
        f"The record layer as it was (AES.new and a nonce made byte by byte) paid {seal_before:.1f} µs "
        f"to seal and {open_before:.1f} to open.",
        "- **Fan-out.** "
        f"A writer that seals each message on its own pays {one:.1f} µs a message; sealing what "
        f"is queued as one record (a Batch, PROTOCOL.md section 4) pays {many:.1f} µs a message "
        "at 64 per record. A batch is only what has already queued up, so no message waits for "
        "another: when the room is quiet every record carries one message, exactly as before.",
        "- **Encoding.** With records batched, the profile of a writer put `encode_message` "
        "first: half of its time went to encoding, once for every reader, a message that is the "
        "same for all of them. Now the room encodes a message once, before its lock, and the "
        "bytes travel with the message through every send queue (`protocol.Encoded`): a "
        "broadcast is encoded once (the writer profile below is after this change).",
        "- **GIL hand-offs.** With a writer thread per client, every pycryptodomex C call (a dozen "
        "or more per record, each letting go of the GIL) handed the GIL to another writer, and "
        "the reader threads that feed them all waited behind each of them. Now one sender thread "
        "seals and writes for every client (sender.py), and batches up what queued meanwhile.",
        "- **Before and after, same run** (flat out; *before* is the same server with a sender "
        "that seals one record per message):",
        "",
    ]
    lines += _before_after(results)
    lines += _gap_finding(results)
    lines += _paced_finding(results)
    lines += _big_room_finding(results)
    seq = results.handshakes.get((CHAT, 1))
    x25519, wrap = _cost(results, micro.X25519), _cost(results, "RSA-3072 OAEP wrap")
    x25519_before = _cost(results, micro.X25519_BEFORE)
    server_side, server_crypto = _cost(results, micro.SERVER_HANDSHAKE), _cost(results, micro.SERVER_CRYPTO)
    der = _cost(results, "DER encoding")
    server_floor = unwrap + x25519
    process = [results.handshakes[(CHAT, n)].server_cpu_us for n in (1, 8) if (CHAT, n) in results.handshakes]
    floor = [results.handshakes[(PLAIN, n)].server_cpu_us for n in (1, 8) if (PLAIN, n) in results.handshakes]
    lines += [
        "",
        f"- **Handshake.** A whole handshake computed in process (both sides, no network) costs "
        f"{whole / 1000:.2f} ms of CPU. The profile below puts the server's RSA-3072 OAEP unwrap "
        f"first: {unwrap / 1000:.2f} ms alone, {unwrap / whole:.0%} of it. Each side's X25519 key "
        f"pair and agreement costs {x25519 / 1000:.2f} ms, and the client's wrap "
        f"{wrap / 1000:.2f} ms. The server's unwrap and X25519, which the design requires, already come to "
        f"{server_floor / 1000:.2f} ms before the client's share and four loopback round trips (hello, key "
        "exchange, HI, username)." + (f" Measured connect-to-ready p50: {seq.p50_ms:.2f} ms." if seq else ""),
        f"  What changed: the server encoded its own public key as DER for every connection "
        f"({der / 1000:.2f} ms); it now does so once per key. X25519 went through pycryptodomex's "
        f"ECC key and point objects ({x25519_before / 1000:.2f} ms a pair and agreement, by CPU time); "
        f"x25519.py calls the same C curve code directly ({x25519 / 1000:.2f} ms). The key schedule's "
        "HKDF uses the standard library's HMAC instead of pycryptodomex's Python one. "
        f"The server's side of a handshake in process now costs {server_side / 1000:.2f} ms of CPU "
        f"against {server_crypto / 1000:.2f} ms for its own cryptography (one unwrap, one X25519 pair "
        f"and agreement): {server_side / server_crypto:.2f} ×. The whole server process spends "
        + " and ".join(f"{us / 1000:.2f}" for us in process)
        + " ms of CPU per connection (sequential, 8 at once: connect, handshake, username, Welcome, "
        "leave), "
        + " and ".join(f"{us / server_crypto:.2f}" for us in process)
        + " × its cryptography. The rest is the connection around the handshake in server.py: "
        "starting and joining its threads, the socket calls, the GIL passing between the accepting "
        "thread and the connection's (an strace counted about 50 futex calls per connection), "
        "joining and leaving the room; the plaintext floor, which does that work without any "
        "cryptography, spends " + " and ".join(f"{us / 1000:.2f}" for us in floor) + " ms per connection.",
    ]
    lines += _memory_finding(results)
    return lines


def _gap_finding(results: Results) -> list[str]:
    """Where the time goes at 100 clients flat out, ours against the floor."""
    out = []
    for senders in (1, 10):
        fan, floor = _find(results, CHAT, 100, senders, False), _find(results, PLAIN, 100, senders, False)
        if not (fan and floor and fan.deliveries and floor.deliveries):
            continue
        out.append(
            f"  At 100 clients and {senders} sender(s) flat out, ours delivers "
            f"{fan.per_second / floor.per_second:.2f}× the floor's rate; per thousand deliveries the "
            f"server used {1e6 * fan.server_cpu / fan.deliveries:.0f} ms of CPU against the floor's "
            f"{1e6 * floor.server_cpu / floor.deliveries:.0f}, and the load generator, which opens "
            f"every record, {1e6 * fan.loadgen_cpu / fan.deliveries:.0f} against "
            f"{1e6 * floor.loadgen_cpu / floor.deliveries:.0f}."
        )
    if out:
        out = [
            "",
            "- **What is left of the gap.** A record still costs a cipher setup on each side, "
            "and every message an encoding and a Python object on each side; the floor has "
            "only the latter. The load generator decrypts in one thread for all clients, like "
            "a thousand real clients would on a thousand machines, so its share of the CPU "
            "counts against ours and not against the floor:",
            *out,
        ]
    return out


def _cpu_ms_per_k(fan) -> float:
    return 1e6 * fan.server_cpu / fan.deliveries if fan.deliveries else float("nan")


def _paced_finding(results: Results) -> list[str]:
    """Why paced latency at 100 clients is what it is."""
    paced, flat = _find(results, CHAT, 100, 10, True), _find(results, CHAT, 100, 10, False)
    if not (paced and flat and paced.deliveries):
        return []
    demand = 10 * 10 * (paced.members - 1)
    verdict = "meets" if paced.latency(0.99) < 50 else "misses"
    return [
        "",
        (
            f"- **Paced latency.** 10 senders at 10 messages a second to 100 clients ask for {demand:,} "
            f"deliveries a second, far below what the server does flat out ({flat.per_second:,.0f}); "
            f"yet p99 is {_ms(paced.latency(0.99))} ms (p50 {_ms(paced.latency(0.5))}), which {verdict} "
            "the 50 ms target. Paced, the sender is idle when a message comes, so every delivery is a "
            "record of its own until a backlog forms: the server spent "
            f"{_cpu_ms_per_k(paced):.0f} ms of CPU per thousand deliveries paced against "
            f"{_cpu_ms_per_k(flat):.0f} flat out, and the 99 records of one message are sealed one after "
            "another, so the last waits for the others. That is why a record's cost matters here: "
            "the record layer now keeps each direction's key schedule and GHASH tables (aes_gcm.py, "
            "see *The seal* above) instead of `AES.new(MODE_GCM)` working them out again for every "
            "record. Before issue 5 the same run had p99 "
            + (
                f"{_ms(_find(results, UNBATCHED, 100, 10, True).latency(0.99))} ms."
                if _find(results, UNBATCHED, 100, 10, True)
                else "not measured."
            )
        ),
    ]


def _big_room_finding(results: Results) -> list[str]:
    """The plaintext floor at 1,000 clients, if it fell behind ours."""
    fan, floor = _find(results, CHAT, 1000, 10, False), _find(results, PLAIN, 1000, 10, False)
    if not (fan and floor and floor.per_second and fan.per_second > floor.per_second):
        return []
    return [
        "",
        (
            f"- **At 1,000 clients the floor is no floor.** The plaintext server delivers "
            f"{floor.per_second:,.0f} a second flat out against our {fan.per_second:,.0f}, and burns "
            f"{_cpu_ms_per_k(floor):.0f} ms of CPU per thousand deliveries against our "
            f"{_cpu_ms_per_k(fan):.0f}: its thousand writer threads take turns at the GIL around every "
            "`sendall`, the convoy that our one sender thread avoids. The ratios that compare like with "
            "like are those at 10 and 100 clients."
        ),
    ]


def _memory_finding(results: Results) -> list[str]:
    rooms = sorted((m, g) for (k, m), g in results.room_rss_kib.items() if k == CHAT)
    small = [(m, g) for (k, m), g in results.room_rss_kib.items() if k != CHAT and k.startswith("chat, ")]
    if not rooms:
        return []
    members, grown = rooms[-1]
    text = (
        f"- **Memory.** With {members:,} clients the server grows by {grown / members:.0f} KiB "
        "per client: a reader thread, a socket, the connection's state and "
        "buffers."
    )
    if small:
        s_members, s_grown = small[0]
        text += (
            f" Smaller thread stacks do not change it ({s_grown / s_members:.0f} KiB per client "
            f"at {s_members:,} with `threading.stack_size(256 KiB)`): a stack's pages count "
            "in RSS only once touched, and these threads touch few, so the server keeps the default."
        )
    text += (
        " A writer thread per client (before issue 12) made it 74 to 95 KiB. The 40 KiB target is not "
        "met: measured apart from this run, an idle thread waiting in `poll()` costs about 16 KiB of RSS "
        "whatever its stack size (its stack's first pages, the C library's and the kernel's bookkeeping), "
        "the connection's Python objects about 10 KiB (tracemalloc), and the rest is cipher state in C "
        "(about 3.4 KiB for the two precomputed AES-GCM directions) and the allocator's slack. A reader "
        "thread per connection is the design; going lower means smaller state per connection."
    )
    return ["", text]


def _before_after(results: Results) -> list[str]:
    rows = []
    for kind, fan in results.fanout:
        if kind != UNBATCHED or fan.paced:
            continue
        after = _find(results, CHAT, fan.members, fan.senders, False)
        floor = _find(results, PLAIN, fan.members, fan.senders, False)
        if after:
            rows.append(
                (
                    fan.members,
                    fan.senders,
                    f"{fan.per_second:,.0f}",
                    f"{after.per_second:,.0f}",
                    f"{after.per_second / fan.per_second:.1f}×",
                    f"{floor.per_second:,.0f}" if floor else "",
                    _ms(fan.latency(0.99)),
                    _ms(after.latency(0.99)),
                )
            )
    return _table(
        (
            "clients",
            "senders",
            "before, deliveries/s",
            "after (batched)",
            "gain",
            "plaintext floor",
            "before p99 ms",
            "after p99 ms",
        ),
        rows,
    )


#: What py-spy showed of a clustered server (issue 12, item 6), and what changed.
CLUSTER_PROFILE = [
    "Where a clustered server's extra CPU went (py-spy `--gil` on the bench's clustered server, "
    "100 clients, 10 senders flat out, before the change): 74% of the samples holding the GIL were "
    "the cluster thread, 53% in `Room.distribute`'s loop over the members' `deliver`, most of it "
    "taking and notifying each outbox's condition, once per member per stream entry; redis-py's "
    "XADD on the readers was 16%, its XREAD 7%. The same load alone spent a third as many GIL "
    "samples. Encoding again was not in the profile (once per message, not per delivery), so the "
    "entries' bytes are not passed through. What changed: the cluster thread hands the room all "
    "the entries of one XREAD at once (`Room.distribute_all`), which gives each member the whole "
    "run under one taking of the room lock, member by member, so each outbox is woken once per "
    "read and sealed as one record. Once the sender thread and the cheaper seal had landed, the "
    "profile put redis-py's XADD first (20% of the GIL samples: a round trip to Redis per line, "
    "from each reader thread), so `RedisCluster.publish` now queues the line for a publisher "
    "thread that adds everything queued in one pipeline; the reader never waits for Redis.",
    "",
]


def crowd_section(results: Results) -> list[str]:
    """Rooms of thousands (bench/crowd.py), with what each column means."""
    return [
        "## Crowd",
        "",
        "Rooms of thousands on one `chat` server each, its clients dealt to several load generator "
        f"processes (one per {crowd.CLIENTS_PER_PROCESS:,} clients, at most one per CPU). *Fill*: every "
        f"client joins, {crowd.JOIN_CONCURRENCY} handshakes in flight in all; *seconds* until the last is "
        "in. *Reconnect storm*: every client of the room drops its connection at once and comes straight "
        "back (asking again for its name while the server still holds it); *seconds* from the drop until "
        "the last is back in. *Join/leave lines per member*: what each member was shown meanwhile; from "
        f"{presence.BUSY_FROM} members the server sums them up, one line a second at most (presence.py, "
        "PROTOCOL.md), where one line per joiner would be (N − 1)/2 on average, N²/2 deliveries in all. "
        "The servers here run with a 120 s handshake deadline and no cap on handshakes in progress, so "
        "that a storm's last handshake, which waits for all the others, is measured rather than cut "
        "off. A real server (5 s deadline, `--max-startups`) turns most of such a storm away at first, "
        "and the clients' reconnect backoff with jitter spreads them out; the figure to read is the "
        "server CPU a client costs, and how fast the server takes them back. A handshake's "
        "cryptography runs under `ChatServer.handshaking`, one at a time: in runs of this storm with "
        "and without it (1,000 clients), it took 6.2 to 6.6 s of server CPU and 10.9 to 12.8 s "
        "against 7.0 to 9.2 s and 14.9 to 16.0 s.",
        "",
        *_table(*crowd.fill_rows(results.crowd)),
        "",
        "Then one member says a line every "
        f"{crowd.FULL_CROWD.pace:g} s, and every other member must get each once, in order; latency "
        "from just before the line is sealed to when a member has decrypted it.",
        "",
        *_table(*crowd.heard_rows(results.crowd)),
        "",
    ]


def write_markdown(
    results: Results, path: Path, meta: dict[str, str], machine: dict[str, str], plot_name: str | None
) -> None:
    out = [
        "# Benchmarks",
        "",
        f"Written by `{meta['command']}` on {meta['date']} (about {meta['minutes']} minutes). "
        "Do not edit by hand: run it again. How it works: [bench/](../bench/__init__.py); "
        "the machine is at the end.",
        "",
        "Three servers run in turn, each in its own process on 127.0.0.1: **chat** (`server.py` as it "
        "is), **chat, unbatched (before)** (the same with a sender that seals as before issue 5, one record "
        "per message) and the **plaintext floor** (the same framing, message encoding, `Room` and "
        "reader and writer thread per client, with no handshake and no encryption; its writer, like "
        "ours, sends everything queued with one `sendall`, so the ratio measures the cryptography, "
        "not a difference in system calls). One load generator process drives them all with real "
        "protocol clients on one selector. Servers run with flood control off and room for 2,000 "
        "clients (`Limits(max_clients=2000, rate=0)`): the load generator is not a person. A "
        "second bench process on the same 2 cores, and whatever else runs there, share the CPU: "
        "compare figures within one run.",
        "",
    ]
    if plot_name:
        out += [f"![Latency and throughput against the number of clients]({plot_name})", ""]
    out += ["## Targets", "", *_table(("target", "measured", "met"), targets(results)), ""]
    out += ["## What the profile showed, and what changed", "", *findings(results), ""]
    if results.errors:
        out += ["## Errors", "", *(f"- {e}" for e in results.errors), ""]
    out += [
        "## Handshake",
        "",
        "Connect-to-ready: from before the TCP connect until the server's `Welcome` (the username is "
        "accepted). Each client leaves once ready. *At once*: how many handshakes are in flight.",
        "",
        *handshake_table(results),
        "",
        "## Fan-out",
        "",
        "*Clients* are all in the room; the first *senders* of them send, and every message goes to "
        "all the others. Flat out: each sender keeps up to 64 messages (512 in all) not yet "
        "delivered to everyone, below the server's outbox limit. Paced: 10 messages a second per "
        "sender. Latency runs from just before the sender's `ChatLine` is sealed (the time is in the "
        "message) to when the receiver has decrypted it, so it includes the load generator's own "
        "work. *Lost* and *dup* count every delivery to every member. *÷ floor* is deliveries/s as a "
        "fraction of the plaintext floor in the same configuration. The CPU columns are the CPU time "
        "each process used during the run, per thousand deliveries: where the time went.",
        "",
        *fanout_table(results),
        "",
        *lockstep.section(results.lockstep, results.costs_us, KIND_NAMES, CHAT, PLAIN),
        "## Cluster",
        "",
        "The same flat-out fan-out (the first *senders* of the *clients* send, every message goes "
        "to all the others) in three setups, each on fresh server processes: one `chat` server "
        "alone; one with `--cluster` on a redis-server started for the run; two with `--cluster` on "
        "that Redis, the clients (and so the senders) dealt to them in turn. Redis is emptied "
        "(FLUSHALL) before each setup. *Lost* and *dup* count every delivery to every member, "
        "across servers; *÷ one server alone* is delivered/s as a fraction of the first setup's. "
        "The CPU columns are per thousand deliveries; *servers* is all of a setup's servers together.",
        "",
        *cluster_table(results),
        "",
        *(f"{line}\n" for line in cluster_finding(results)),
        *CLUSTER_PROFILE,
        *crowd_section(results),
        "## Memory",
        "",
        "Server RSS (from /proc) before any client, and its growth once the room is full and the join "
        "messages are delivered (each size on a fresh server process).",
        "",
        *memory_table(results),
        "",
        *flood.markdown(results.flood),
        "## Raw costs",
        "",
        "In process, no network: mean µs per call.",
        "",
        *costs_table(results),
        "",
        "## Profiles",
        "",
        "cProfile, functions by own time.",
        "",
    ]
    for title, text in results.profiles.items():
        out += [f"### {title}", "", "```", text, "```", ""]
    out += ["## Machine", "", *_table(("", ""), machine.items()), ""]
    path.write_text("\n".join(out), encoding="utf-8")
