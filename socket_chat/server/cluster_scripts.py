"""The Lua scripts the cluster (``cluster``) runs in Redis, each atomic
there: claiming a name, agreeing on the name rules, freeing a name, and
keeping this server's names (PROTOCOL.md section 8 says what the keys hold).
"""

from __future__ import annotations

__all__ = ["CLAIM", "AGREE", "RELEASE", "REFRESH"]

# Claim a free name: KEYS[1] the name's key; ARGV: server, name, since, ttl
# (ms), the member's key fingerprint ("" for a guest).
CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'server', ARGV[1], 'name', ARGV[2], 'since', ARGV[3], 'key', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# Agree on how names compare: KEYS[1] the rules' key; ARGV: these rules, ttl
# (ms). The rules held, once they are these and kept alive; else the others'.
AGREE = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return held
"""

# Free a name, if this server holds it. KEYS[1] the name's key; ARGV[1] server.
RELEASE = """
if redis.call('HGET', KEYS[1], 'server') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

# Keep this server's names: refresh the ones it holds, claim again the ones
# that expired or were lost with Redis, and return the positions (1-based) of
# those another server holds now. KEYS: the names' keys; ARGV: server, ttl
# (ms), then name, since and key fingerprint ("" for a guest) for each key.
REFRESH = """
local lost = {}
for i, key in ipairs(KEYS) do
  local holder = redis.call('HGET', key, 'server')
  if holder == false or holder == ARGV[1] then
    redis.call('HSET', key, 'server', ARGV[1], 'name', ARGV[3 * i], 'since', ARGV[3 * i + 1], 'key', ARGV[3 * i + 2])
    redis.call('PEXPIRE', key, ARGV[2])
  else
    table.insert(lost, i)
  end
end
return lost
"""
