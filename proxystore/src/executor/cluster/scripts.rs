//! The queue's server-side scripts (Lua), each sent by its digest.

/// A server-side script, sent by its digest (`EVALSHA`) and loaded again
/// when the server does not know it (after a restart).
pub(super) struct Lua {
    source: &'static str,
    script: std::sync::OnceLock<redis::Script>,
}

impl Lua {
    const fn new(source: &'static str) -> Lua {
        Lua {
            source,
            script: std::sync::OnceLock::new(),
        }
    }

    /// An invocation with these keys; add arguments, then `invoke`.
    pub(super) fn call(&self, keys: &[&str]) -> redis::ScriptInvocation<'_> {
        let mut call = self
            .script
            .get_or_init(|| redis::Script::new(self.source))
            .prepare_invoke();
        for key in keys {
            call.key(*key);
        }
        call
    }
}

/// Finishes a job: if it is still pending to this consumer (not taken
/// over meanwhile by a reaper) and its caller is alive, queue the reply
/// (and keep the list from outliving an absent reader); in every case
/// acknowledge and delete the entry. Returns 1 if the reply was queued, 0
/// if the caller is gone, 2 if the job is no longer pending to this
/// consumer (another worker took it over, and its run answers). KEYS: jobs, reply, caller's heartbeat. ARGV: group, entry id,
/// reply, reply ttl (ms), consumer.
pub(super) static FINISH: Lua = Lua::new(FINISH_LUA);
const FINISH_LUA: &str = r"
local owner = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #owner == 0 or owner[1][2] ~= ARGV[5] then
  return 2
end
local alive = redis.call('EXISTS', KEYS[3])
if alive == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[3])
  -- A script's writes stay when it fails: a refused expiry must not
  -- leave a reply behind (the worker sends another).
  local expiry = redis.pcall('PEXPIRE', KEYS[2], ARGV[4])
  if type(expiry) == 'table' and expiry.err then
    redis.call('RPOP', KEYS[2])
    return expiry
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return alive
";

/// Renews a job's lease if it is still pending to this consumer: its idle
/// time starts again and its delivery count stays (`JUSTID`). Returns 0,
/// and takes nothing, if the job is gone or another worker holds it (a
/// plain `XCLAIM` would take it back from the worker that re-runs it).
/// KEYS: jobs. ARGV: group, entry id, consumer.
pub(super) static RENEW: Lua = Lua::new(RENEW_LUA);
const RENEW_LUA: &str = r"
local owner = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #owner == 0 or owner[1][2] ~= ARGV[3] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1
";

/// Gives a job up: copy it to the dead-letter stream, reply to its caller
/// (if alive), acknowledge and delete it. KEYS: jobs, dead, reply, caller's
/// heartbeat. ARGV: group, entry id, reply, reply ttl (ms), dead-letter ttl
/// (ms), task name, caller, attempts, reason.
pub(super) static GIVE_UP: Lua = Lua::new(GIVE_UP_LUA);
const GIVE_UP_LUA: &str = r"
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*',
  'task', ARGV[6], 'caller', ARGV[7], 'attempts', ARGV[8], 'reason', ARGV[9],
  'entry', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local alive = redis.call('EXISTS', KEYS[4])
if alive == 1 then
  redis.call('RPUSH', KEYS[3], ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return alive
";

/// Takes back a job nobody has been delivered yet: deletes it if it is not
/// in the pending-entries list. Returns 1 if it was deleted. KEYS: jobs.
/// ARGV: group, entry id.
pub(super) static REVOKE: Lua = Lua::new(REVOKE_LUA);
const REVOKE_LUA: &str = r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending > 0 then
  return 0
end
return redis.call('XDEL', KEYS[1], ARGV[2])
";

/// Keeps the queue's stream alive (every live caller and worker renews it
/// with its heartbeat): an expiry of ARGV[1] ms while it holds no entry,
/// ARGV[2] ms while it does. A queue whose callers and workers all died
/// thus leaves nothing behind. KEYS: jobs.
pub(super) static KEEP: Lua = Lua::new(KEEP_LUA);
const KEEP_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// Leaves the queue: removes the leaver's heartbeat and, if nothing is
/// pending to it, its consumer; then, if the stream holds no entry and no
/// consumer of its group nor caller has a live heartbeat, removes the
/// stream (and its group). Returns 1 if it did. KEYS: jobs, callers, the
/// leaver's heartbeat. ARGV: group, the leaver's name, the heartbeat
/// prefix.
pub(super) static LEAVE: Lua = Lua::new(LEAVE_LUA);
const LEAVE_LUA: &str = r"
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local mine = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if type(mine) == 'table' and not mine.err and #mine == 0 then
  redis.pcall('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
if redis.call('XLEN', KEYS[1]) > 0 then
  return 0
end
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(consumers) == 'table' and not consumers.err then
  for _, c in ipairs(consumers) do
    if redis.call('EXISTS', ARGV[3] .. c[2]) == 1 then
      return 0
    end
  end
end
for _, c in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', ARGV[3] .. c) == 1 then
    return 0
  end
end
redis.call('DEL', KEYS[1])
return 1
";

/// Hands a job back: if it is pending to this consumer, makes it look
/// abandoned (idle for ARGV[4] ms, its delivery not counted), so that a
/// reaper gives it to another worker as soon as this one's heartbeat is
/// gone. Returns 1 if it did. KEYS: jobs. ARGV: group, entry id, consumer,
/// idle ms.
pub(super) static HAND_BACK: Lua = Lua::new(HAND_BACK_LUA);
const HAND_BACK_LUA: &str = r"
local owner = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #owner == 0 or owner[1][2] ~= ARGV[3] then
  return 0
end
local count = math.max(tonumber(owner[1][4]) - 1, 0)
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[4],
  'RETRYCOUNT', count, 'JUSTID')
return 1
";

/// Tells a caller that its job runs again (a worker took it over from one
/// that died or stopped), if the caller is alive. KEYS: reply, caller's
/// heartbeat. ARGV: notice, reply ttl (ms).
pub(super) static NOTIFY: Lua = Lua::new(NOTIFY_LUA);
const NOTIFY_LUA: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";
