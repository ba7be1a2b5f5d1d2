"""The run's results printed, written as docs/benchmarks.md and benchmarks.json, and plotted.

The entry points that ``python -m bench`` calls: ``print_tables`` (the
tables on the terminal), ``write_markdown`` (the whole report: the tables
of tables.py, the prose of findings.py and each section's explanation),
``write_json`` (the figures, for tests and for comparing runs) and ``plot``
(latency and throughput against the number of clients). ``SECTIONS`` are
the report's headings, which the tests look for.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import crowd, flood, lockstep, peer, resume, swarm
from bench import rooms as rooms_bench
from bench import store as store_bench
from bench.findings import CLUSTER_PROFILE, cluster_finding, findings
from bench.runner import CHAT, PLAIN, UNBATCHED, Results
from bench.tables import (
    KIND_NAMES,
    cluster_baseline,
    cluster_table,
    costs_table,
    fanout_table,
    handshake_table,
    memory_table,
    table,
    targets_table,
)
from socket_chat.chat import presence

SECTIONS = (
    "## Targets",
    "## Handshake",
    "## Fan-out",
    "## Lockstep",
    "## The IRC server as a peer",
    "## Cluster",
    "## Crowd",
    "## Memory",
    "## The history store",
    "## Rooms",
    "## Resumption",
    "## Raw costs",
    "## Profiles",
    "## Machine",
)


def print_tables(results: Results) -> None:
    for title, lines in (
        ("Targets", targets_table(results)),
        ("Handshake", handshake_table(results)),
        ("Fan-out", fanout_table(results)),
        ("Lockstep", lockstep.table(results.lockstep, results.costs_us, KIND_NAMES)),
        ("The IRC server as a peer", peer.table(results.peer)),
        ("Cluster", cluster_table(results)),
        ("Crowd", [*table(*crowd.fill_rows(results.crowd)), "", *table(*crowd.heard_rows(results.crowd))]),
        ("Memory", memory_table(results)),
        ("Raw costs", costs_table(results)),
        ("Handshake flood from one address", flood.table(results.flood)),
        ("Handshake flood from 200 addresses, and a person", swarm.table(results.swarm)),
        ("The history store", store_bench.rows(results.store)),
        ("Rooms", rooms_bench.rows(results.rooms)),
        ("Resumption", resume.markdown(results.resume)[2:]),
    ):
        print(f"\n{title}")
        print("\n".join(lines))
    for error in results.errors:
        print(f"ERROR: {error}")


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
    out += ["## Targets", "", *targets_table(results), ""]
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
        *peer.section(results.peer),
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
        *(swarm.markdown(results.swarm) if results.swarm else []),
        *store_bench.markdown(results.store),
        *rooms_bench.markdown(results.rooms),
        *resume.markdown(results.resume),
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
    out += ["## Machine", "", *table(("", ""), machine.items()), ""]
    path.write_text("\n".join(out), encoding="utf-8")


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
        f"{presence.BUSY_FROM} members the server sums them up, one line a second at most (chat/presence.py, "
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
        *table(*crowd.fill_rows(results.crowd)),
        "",
        "Then one member says a line every "
        f"{crowd.FULL_CROWD.pace:g} s, and every other member must get each once, in order; latency "
        "from just before the line is sealed to when a member has decrypted it.",
        "",
        *table(*crowd.heard_rows(results.crowd)),
        "",
    ]


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
                handshake_thread_us=r.handshake_thread_us,
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
        "swarm": swarm.as_json(results.swarm),
        "rooms": rooms_bench.as_json(results.rooms),
        "resume": resume.as_json(results.resume),
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
        "store": store_bench.as_json(results.store),
        "peer": peer.as_json(results.peer),
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
