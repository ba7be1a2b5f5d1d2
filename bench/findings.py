"""The report's prose: what the profiles showed and what changed, in this run's figures.

``findings`` is the section "What the profile showed, and what changed" of
docs/benchmarks.md (the seal, fan-out, encoding, GIL hand-offs, the table of
before and after, the gap to the plaintext floor, paced latency, the
handshake and memory), ``cluster_finding`` what the cluster figures mean on
this machine, and ``CLUSTER_PROFILE`` where a clustered server's CPU went.
Each paragraph is written only when the run holds the figures it needs.
"""

from __future__ import annotations

import os

from bench import micro, peer
from bench.runner import CHAT, PLAIN, UNBATCHED, Results
from bench.tables import cluster_alone, cost, cpu_ms_per_k, cpu_per_k, find_fan, ms, table


def findings(results: Results) -> list[str]:
    """What the profile showed and what changed, in figures from this run."""
    seal, aes_new = cost(results, micro.SEAL), cost(results, micro.SEAL_AES_NEW)
    opened, aes_new_open = cost(results, micro.OPEN), cost(results, micro.OPEN_AES_NEW)
    seal_before, open_before = cost(results, micro.SEAL_BEFORE), cost(results, micro.OPEN_BEFORE)
    one, many = cost(results, "writer: seal a message, 1 "), cost(results, "writer: seal a message, 64 ")
    unwrap, whole = cost(results, "RSA-3072 OAEP unwrap"), cost(results, "whole handshake")
    lines = [
        f"- **The seal.** One `AES.new(key, MODE_GCM, nonce)` seal of a chat line costs {aes_new:.1f} µs "
        "in this run, most of it the key schedules, hash subkey and GHASH tables worked out again "
        "for every nonce. The record layer now makes those once per connection direction "
        "(crypto/aes_gcm.py: one AES-ECB call for E(J0) and the counter blocks, an XOR, pycryptodomex's own "
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
        "seals and writes for every client (server/sender.py), and batches up what queued meanwhile.",
        "- **Before and after, same run** (flat out; *before* is the same server with a sender "
        "that seals one record per message):",
        "",
    ]
    lines += _before_after(results)
    lines += _gap_finding(results)
    lines += _paced_finding(results)
    lines += _big_room_finding(results)
    seq = results.handshakes.get((CHAT, 1))
    x25519, wrap = cost(results, micro.X25519), cost(results, "RSA-3072 OAEP wrap")
    x25519_before = cost(results, micro.X25519_BEFORE)
    server_side, server_crypto = cost(results, micro.SERVER_HANDSHAKE), cost(results, micro.SERVER_CRYPTO)
    der = cost(results, "DER encoding")
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
        f"crypto/x25519.py calls the same C curve code directly ({x25519 / 1000:.2f} ms). The key schedule's "
        "HKDF uses the standard library's HMAC instead of pycryptodomex's Python one. "
        f"The server's side of a handshake in process now costs {server_side / 1000:.2f} ms of CPU "
        f"against {server_crypto / 1000:.2f} ms for its own cryptography (one unwrap, one X25519 pair "
        f"and agreement): {server_side / server_crypto:.2f} ×. The whole server process spends "
        + " and ".join(f"{us / 1000:.2f}" for us in process)
        + " ms of CPU per connection (sequential, 8 at once: connect, handshake, username, Welcome, "
        "leave), "
        + " and ".join(f"{us / server_crypto:.2f}" for us in process)
        + " × its cryptography. The rest is the connection around the handshake in server/app.py and handler.py: "
        "starting and joining its threads, the socket calls, the GIL passing between the accepting "
        "thread and the connection's (an strace counted about 50 futex calls per connection), "
        "joining and leaving the room; the plaintext floor, which does that work without any "
        "cryptography, spends " + " and ".join(f"{us / 1000:.2f}" for us in floor) + " ms per connection.",
    ]
    lines += _connection_finding(results)
    lines += _memory_finding(results)
    lines += _peer_finding(results)
    return lines


#: Where a connection's CPU went, thread by thread (issue 22, part 3): the
#: server's threads' CPU from /proc/PID/task/TID/schedstat over 200–300
#: connections one at a time, and py-spy (``record --threads --gil
#: --native``) of the same loop; measured on 2026-12-07 on this two-core
#: machine, shared, so each figure is within ±15 %.
CONNECTION_PROFILE = (
    "Per full connection, thread by thread: the handshake thread 3.5–3.9 ms (the RSA unwrap, the X25519 "
    "agreement and the key schedule, and their frames' parsing), the readers about 1.0 ms (a third of it "
    "opening the client's HI and the records around it, a third the member session: its first words, the name, "
    "joining and leaving the room; the rest the thread's start and end), the accepting thread about 0.4 ms (a "
    "fifth of it the connection's X25519 key pair, the rest accept, admission and the handler's objects) and the "
    "sender 0.25–0.3 ms. What changed in issue 22: the socket options are set once on the listener, which Linux "
    "passes on to what it accepts (five setsockopt calls less per connection; the first accept checks, and a "
    "system that does not pass them on still gets them per socket); the accept skips socket.accept's Enum "
    "conversions and the admission no longer parses an IPv4 address; the reader writes the session's first "
    "words itself before it hands the connection to the sender, which then wakes up only for what the room "
    "sends (the sender's CPU per connection 0.42 → 0.25–0.3 ms, its wake-ups about 8 → 5); and a resumption's "
    "offer (no RSA) is read by the reader itself, not handed to the handshake thread. What is left is "
    "spread thin: the cryptography that the target's denominator leaves out (the key schedule's HKDF, two AES "
    "key schedules and GHASH tables for the record keys, the handshake's records), a thread per connection "
    "(started, and waited for by Thread.start, then ended), four loopback round trips of socket calls, and the "
    "chat's join and leave; no single cause is a tenth of the whole. Under 1.3 × would take a connection "
    "without a thread of its own until it has a name (an event loop for the handshake and the greeting), "
    "which is the thread-per-connection design this server keeps."
)


def _connection_finding(results: Results) -> list[str]:
    """The connection around the handshake, thread by thread (issue 22): its
    CPU in this run, against the two denominators of tables.py."""
    run = results.handshakes.get((CHAT, 1))
    crypto = cost(results, micro.SERVER_CRYPTO)
    if run is None or not crypto > 0 or not run.server_cpu_us > 0:
        return []
    same_run = (
        f" and {run.server_cpu_us / run.handshake_thread_us:.2f} × its handshake thread's CPU in the same run "
        f"({run.handshake_thread_us / 1000:.2f} ms)"
        if run.handshake_thread_us > 0
        else ""
    )
    return [
        "",
        f"- **The connection around the handshake.** One at a time, the whole server spends "
        f"{run.server_cpu_us / 1000:.2f} ms of CPU per connection in this run: "
        f"{run.server_cpu_us / crypto:.2f} × its cryptography timed alone ({crypto / 1000:.2f} ms)"
        f"{same_run}. " + CONNECTION_PROFILE,
    ]


def _before_after(results: Results) -> list[str]:
    rows = []
    for kind, fan in results.fanout:
        if kind != UNBATCHED or fan.paced:
            continue
        after = find_fan(results, CHAT, fan.members, fan.senders, False)
        floor = find_fan(results, PLAIN, fan.members, fan.senders, False)
        if after:
            rows.append(
                (
                    fan.members,
                    fan.senders,
                    f"{fan.per_second:,.0f}",
                    f"{after.per_second:,.0f}",
                    f"{after.per_second / fan.per_second:.1f}×",
                    f"{floor.per_second:,.0f}" if floor else "",
                    ms(fan.latency(0.99)),
                    ms(after.latency(0.99)),
                )
            )
    return table(
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


def _gap_finding(results: Results) -> list[str]:
    """Where the time goes at 100 clients flat out, ours against the floor."""
    out = []
    for senders in (1, 10):
        fan, floor = find_fan(results, CHAT, 100, senders, False), find_fan(results, PLAIN, 100, senders, False)
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


def _paced_finding(results: Results) -> list[str]:
    """Why paced latency at 100 clients is what it is."""
    paced, flat = find_fan(results, CHAT, 100, 10, True), find_fan(results, CHAT, 100, 10, False)
    if not (paced and flat and paced.deliveries):
        return []
    demand = 10 * 10 * (paced.members - 1)
    verdict = "meets" if paced.latency(0.99) < 50 else "misses"
    return [
        "",
        (
            f"- **Paced latency.** 10 senders at 10 messages a second to 100 clients ask for {demand:,} "
            f"deliveries a second, far below what the server does flat out ({flat.per_second:,.0f}); "
            f"yet p99 is {ms(paced.latency(0.99))} ms (p50 {ms(paced.latency(0.5))}), which {verdict} "
            "the 50 ms target. Paced, the sender is idle when a message comes, so every delivery is a "
            "record of its own until a backlog forms: the server spent "
            f"{cpu_ms_per_k(paced):.0f} ms of CPU per thousand deliveries paced against "
            f"{cpu_ms_per_k(flat):.0f} flat out, and the 99 records of one message are sealed one after "
            "another, so the last waits for the others. That is why a record's cost matters here: "
            "the record layer now keeps each direction's key schedule and GHASH tables (crypto/aes_gcm.py, "
            "see *The seal* above) instead of `AES.new(MODE_GCM)` working them out again for every "
            "record. Before issue 5 the same run had p99 "
            + (
                f"{ms(find_fan(results, UNBATCHED, 100, 10, True).latency(0.99))} ms."
                if find_fan(results, UNBATCHED, 100, 10, True)
                else "not measured."
            )
        ),
    ]


def _big_room_finding(results: Results) -> list[str]:
    """The plaintext floor at 1,000 clients, if it fell behind ours."""
    fan, floor = find_fan(results, CHAT, 1000, 10, False), find_fan(results, PLAIN, 1000, 10, False)
    if not (fan and floor and floor.per_second and fan.per_second > floor.per_second):
        return []
    return [
        "",
        (
            f"- **At 1,000 clients the floor is no floor.** The plaintext server delivers "
            f"{floor.per_second:,.0f} a second flat out against our {fan.per_second:,.0f}, and burns "
            f"{cpu_ms_per_k(floor):.0f} ms of CPU per thousand deliveries against our "
            f"{cpu_ms_per_k(fan):.0f}: its thousand writer threads take turns at the GIL around every "
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
        " A writer thread per client (before issue 12) made it 74 to 95 KiB. Where an idle client's RSS "
        "went, before issue 22 (measured apart from this run: /proc/PID/smaps and tracemalloc on a server "
        "holding 300 idle clients, 45.9 KiB each): 20 KiB in the mappings of thread stacks and 26 KiB in "
        "the rest of anonymous memory, of which 9.4 KiB the connection's Python objects (tracemalloc: "
        "threads' conditions and deques, the protocol connection, the two ciphers' pycryptodomex handles, "
        "the handler) and the rest the C side (the two AES-GCM directions' key schedules and GHASH "
        "tables, about 3.4 KiB, the thread's own state, the allocator's slack). The profile's surprise: "
        "200 threads waiting in `poll()` cost 15.0 KiB each, and 32.5 KiB each once each had done one "
        "RSA-3072 unwrap first, whatever the stack size: the unwrap touches stack and heap pages the "
        "thread then keeps for life. The readers did the handshake's cryptography themselves. Now one "
        "handshake thread does it for all of them (server/handshakes.py, still one at a time, as "
        "`ChatServer.handshaking` had it) and each reader waits for its answer: 31.6 KiB per idle client "
        "in the same measurement (stacks 12 KiB, the rest 19.6). The member session (and its token "
        "bucket) is made when the session starts rather than at accept, so a connection still in its "
        "handshake costs less too."
    )
    return ["", text]


def cluster_finding(results: Results) -> list[str]:
    """What the cluster figures mean on this machine, in this run's figures."""
    alone = cluster_alone(results)
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
            f"redis-py on each side, and the server used {cpu_per_k(one.fan.server_cpu, one.fan)} ms of CPU "
            f"per thousand deliveries against {cpu_per_k(alone.fan.server_cpu, alone.fan)} alone. Two "
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
        f"{cpu_per_k(two.fan.server_cpu, two.fan)} ms of server CPU per thousand deliveries "
        f"against {cpu_per_k(one.fan.server_cpu, one.fan)}"
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


def _peer_finding(results: Results) -> list[str]:
    """Issue 22, part 3: one message in flight beside the IRC server, what the
    profile showed and what changed; and what sets the pace flat out."""
    chat, ngircd = results.peer.runs.get(peer.CHAT), results.peer.runs.get(peer.IRC)
    if not (chat and ngircd):
        return []
    ratios = [
        f"{chat.lockstep[n].cpu_us:.1f} against {ngircd.lockstep[n].cpu_us:.1f} µs at {n} receivers "
        f"({chat.lockstep[n].cpu_us / ngircd.lockstep[n].cpu_us:.2f} ×)"
        for n in sorted(set(chat.lockstep) & set(ngircd.lockstep))
        if ngircd.lockstep[n].cpu_us
    ]
    lockstep = [
        "",
        "- **One message in flight, beside the IRC server** (the peer section): server CPU per delivery "
        + "; ".join(ratios)
        + ". By py-spy `--gil` on our server (lockstep, 100 receivers, measured apart from this run), "
        "before issue 22's part 3 about half of the samples holding the GIL were the seal "
        "(`RecordSealer.seal`: the ECB keystream call, the XOR, pycryptodomex's GHASH and the ctypes "
        "wrappers around them: `create_string_buffer`, `c_uint8_ptr`, `EcbMode.encrypt`), a tenth the "
        "protocol's `send_batch` and framing, a fifth the reader (receive, open, `Room` into every "
        "outbox). What changed (each measured apart, µs per call, before and after in one process): the "
        "seal calls pycryptodomex's ECB and GHASH C functions straight, through ctypes prototypes of its "
        "own that keep the GIL (a CDLL call gives it up and takes it back around every call), and makes "
        "a record's counter blocks with one multiplication and its nonce from the IV as a number (5.3 to "
        "3.8); one message alone skips the Batch grouping and `data_to_send` hands a lone record over "
        "uncopied (the sender's whole path per delivery, seal included, 7.7 to 5.0); a wake of the "
        "sender takes no lock unless it sleeps; and a client's receive path (open, decode) reads a "
        "message in one loop over its bytes without running the constructor's checks again (16 to 12), "
        "which is the load generator's work too. ngircd does the same per delivery in C: one GnuTLS "
        "record (AES-GCM with AES-NI) and one `send`; the kernel's `send`, which on loopback also does "
        "the receiving end's TCP work, costs both about the same (the lockstep section's *of which "
        "kernel*). The p99 to the last receiver includes the load generator, one Python thread that "
        "opens every receiver's copy: the standard library's `ssl` opens an IRC client's record in C, "
        "ours go through crypto/aes_gcm.py and the protocol's decoding in Python."
        + _load_generator_share(chat, ngircd),
    ]
    return [*lockstep, *_flat_out_pace(chat, ngircd)]


def _load_generator_share(chat, ngircd) -> str:
    """Where the p99 to the last receiver goes, from this run's lockstep at
    the most receivers both servers were measured with: the server's CPU
    for one message to all of them, and the load generator's."""
    both = sorted(set(chat.lockstep) & set(ngircd.lockstep))
    if not both:
        return ""
    ours, theirs = chat.lockstep[both[-1]], ngircd.lockstep[both[-1]]
    if not (ours.deliveries and theirs.deliveries):
        return ""
    n = ours.receivers
    server = [r.cpu_us * n / 1000 for r in (ours, theirs)]
    client = [1e6 * r.loadgen_cpu / r.deliveries * n / 1000 for r in (ours, theirs)]
    return (
        f" Where the p99 goes, in this run's figures for one message to all {n}: our server's CPU "
        f"{server[0]:.1f} ms against ngircd's {server[1]:.1f}, and the load generator's {client[0]:.1f} ms "
        f"for our records against {client[1]:.1f} for its; the p99s, {ours.latency(0.99):.1f} and "
        f"{theirs.latency(0.99):.1f} ms, are close to each one's sum ({server[0] + client[0]:.1f} and "
        f"{server[1] + client[1]:.1f}): the last receiver waits for the server to seal and send to "
        "everyone and for the load generator to open everyone's copy, one after the other on two shared "
        "cores. So most of the gap is the server's CPU per delivery, which the target above allows at 3 × "
        "ngircd's; the p99 would meet ngircd's only with a delivery as cheap as its own, in C, and the "
        "rest is the measuring client's Python."
    )


def _flat_out_pace(chat, ngircd) -> list[str]:
    """Which process sets the pace flat out: each one's CPU over the run's wall time."""
    ours, theirs = chat.flat, ngircd.flat
    if not (ours and theirs and ours.seconds and theirs.seconds and ours.deliveries and theirs.deliveries):
        return []

    def share(fan) -> str:
        return (
            f"{fan.per_second:,.0f} deliveries/s, the server busy {fan.server_cpu / fan.seconds:.0%} of the "
            f"run ({fan.server_cpu / fan.deliveries * 1e6:.1f} µs a delivery), the load generator "
            f"{fan.loadgen_cpu / fan.seconds:.0%} ({fan.loadgen_cpu / fan.deliveries * 1e6:.1f} µs)"
        )

    figures = (
        f"- **Flat out to {ours.members - 1} receivers, beside the IRC server**: ours {share(ours)}; "
        f"ngircd {share(theirs)}."
    )
    if not all(fan.loadgen_cpu > fan.server_cpu for fan in (ours, theirs)):
        return ["", figures]
    return [
        "",
        figures + " Neither server sets the rate: the load generator, one Python thread, "
        "is the busy one, and it spends more per delivery on ours (it opens and decodes our records in "
        "Python) than on ngircd's (the standard library's `ssl` in C, then an IRC line). So the rate "
        "flat out compares the two clients more than the two servers; the server's CPU per delivery is "
        "the servers' figure. Issue 22's own table (306k against 225k deliveries/s, 1.6 against 2.6 µs) "
        "came from a harness before bench/peer.py: our server's CPU per delivery there is about what it "
        "is here, ngircd's is not; and the bench keeps the history in memory (no store) unless told.",
    ]
