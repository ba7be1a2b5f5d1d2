"""The benchmark: ``python -m bench`` (``--help`` for the options).

It starts real servers on 127.0.0.1 in child processes, drives them with a
load generator that speaks the real protocol for many clients in one process
(``selectors``, non-blocking sockets), and reports handshake times, fan-out
throughput and latency, memory, and two baselines: a plaintext server of the
same shape (the cost floor) and the raw cost of one record. Its cluster mode
runs the same fan-out on one server alone, then on one and two servers with
``--cluster`` on a redis-server of its own (skipped without redis-server).
Its peer is an IRC server, Debian's ngircd over TLS, measured the same way
beside ours in the same run (skipped, and said so, without ngircd).

Modules:
    plain     the plaintext floor: the same framing and threads, no crypto
    servers   the child process that runs one kind of server
    loadgen   the load generator: many protocol clients on one selector
    redis_server  a redis-server on loopback for the cluster runs (and tests)
    micro     raw costs and cProfile of the hot paths, in process
    flood     one address flooding handshakes, per-address limits off and on
    irc       ngircd over TLS on loopback, and an IRC client the load generator drives
    peer      the chat and ngircd side by side: connect, lockstep, flat out, RSS
    crowd     rooms of 1,000 and 5,000 filled, heard and refilled in a
              reconnect storm, by load generators in several processes
    swarm     a handshake flood from 200 addresses while a person connects
    store     the history store on and off, and /search over 1,000,000 lines
    rooms     one room of 500 alone and while 50 other rooms chat; 1,000 joins
    resume    full and resumed connections, and a reconnect storm with tickets
    tables    the report's tables and its targets
    findings  the report's prose: what the profiles showed, what changed
    report    the tables printed, docs/benchmarks.md, benchmarks.json and the plot
"""
