"""The Lua scripts the cluster (``cluster``) runs in Redis, each atomic
there: claiming a name, agreeing on the name rules, freeing a name, and
keeping this server's names, counting the lines unread, keeping and taking
private lines for someone offline (PROTOCOL.md section 8
says what the keys hold).
"""

from __future__ import annotations

__all__ = [
    "CLAIM",
    "AGREE",
    "RELEASE",
    "REFRESH",
    "REGISTER",
    "UNREGISTER",
    "ADD_DEVICE",
    "REMOVE_DEVICE",
    "COUNT_LINES",
    "KEEP_WAITING",
    "TAKE_WAITING",
]

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

# The registered names (chat/registrations.py, in Redis: PROTOCOL.md section
# 8). Each returns one of the words of registrations.Taken or DeviceAdded.

# Register or renew a name. KEYS[1] the registration's key, KEYS[2] the set of
# the owner's registered names; ARGV: the name's names.key, the name, the
# owner, the taking key (the owner or one of its devices), now, the expiry
# (ms, 0: never), the cap, the prefix of registrations' keys.
REGISTER = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then
  if owner ~= ARGV[3] and owner ~= ARGV[4] then return 'others' end
  redis.call('HSET', KEYS[1], 'used_at', ARGV[5])
  if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
  return 'renewed'
end
local held = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('HGET', ARGV[8] .. key, 'owner') == ARGV[3] then held = held + 1
  else redis.call('SREM', KEYS[2], key) end
end
if held >= tonumber(ARGV[7]) then return 'at cap' end
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'owner', ARGV[3], 'registered_at', ARGV[5], 'used_at', ARGV[5])
if tonumber(ARGV[6]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
redis.call('SADD', KEYS[2], ARGV[1])
return 'registered'
"""

# Free a registration: KEYS[1] its key; ARGV: the prefix of the owners' sets,
# the name's names.key. Returns name, owner, registered_at, used_at, or nil.
UNREGISTER = """
local found = redis.call('HMGET', KEYS[1], 'name', 'owner', 'registered_at', 'used_at')
if not found[1] then return false end
redis.call('DEL', KEYS[1])
redis.call('SREM', ARGV[1] .. found[2], ARGV[2])
return found
"""

# Add a device. KEYS: the device's hash, the owner's set of devices, the
# owner's own device hash (is it a device?), the device's set of devices (is
# it an owner?), the owner's set of names; ARGV: device, owner, now, most
# devices, the prefix of registrations' keys.
ADD_DEVICE = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 'not owner' end
if ARGV[1] == ARGV[2] then return 'self' end
local held = redis.call('HGET', KEYS[1], 'owner')
if held then
  if held == ARGV[2] then return 'already' end
  return 'others'
end
local names = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  if redis.call('HGET', ARGV[5] .. key, 'owner') == ARGV[2] then names = names + 1 end
end
if names == 0 then return 'no names' end
if redis.call('SCARD', KEYS[4]) > 0 then return 'has devices' end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 'too many' end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'added_at', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 'added'
"""

# Remove a device of this owner: KEYS: the device's hash, the owner's set of
# devices; ARGV: device, owner. 1 if it was one.
REMOVE_DEVICE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# Count the chat lines and actions in one slice of the stream after an
# entry: KEYS[1] the stream; ARGV: the first entry ID to count from (XRANGE's
# form: "(MS-SEQ" or "-"), the type bytes that count (a string of them), the
# entries to read at most. Returns the count and the last entry ID read if
# the slice was full (more may follow), else "". Read in Redis, so a count
# costs a reply a slice, not the stream's tail sent over; a slice at a time,
# so Redis is never held for the whole tail (ClusterHistory.count_after).
COUNT_LINES = """
local counted = 0
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[3])
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' and #fields[i + 1] > 0 and string.find(ARGV[2], string.sub(fields[i + 1], 1, 1), 1, true) then
      counted = counted + 1
    end
  end
end
if #entries < tonumber(ARGV[3]) then return {counted, ''} end
return {counted, entries[#entries][1]}
"""

# Keep a private line for someone offline, under the cap: KEYS[1] the key's
# list; ARGV: the line (JSON), the cap, the list's expiry (seconds; 0: none).
# 1 if kept, 0 if the list holds the cap already.
KEEP_WAITING = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return 1
"""

# Take every line waiting for a key, once: KEYS[1] the key's list. Read and
# deleted together, so two servers taking at once give each line to one.
TAKE_WAITING = """
local waiting = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return waiting
"""
