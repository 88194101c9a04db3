//! The queue on Redis: a reliable-queue design of our own.
//!
//! apalis-redis 1.0 pushes every job through a scheduled set that it promotes
//! all at once (it fails above ~8,000 due jobs), drains in O(N²) with task
//! locks on, ignores `max_attempts` and cannot list its tasks (see the field
//! notes). Here each kind has:
//!
//! - `{p}:ready:{kind}`    LIST of interactive job ids without a group due
//!   now (RPUSH / LPOP), and `{p}:ready:{kind}:{lane}:{group}` one LIST
//!   per other (lane, group) — lane `0` interactive, `1` bulk;
//! - `{p}:lanes:{kind}:{lane}` LIST of the groups whose ready list is not
//!   empty, in the order fetches serve them (each fetch rotates it): the
//!   fair share, interactive lane first;
//! - `{p}:sched:{kind}`    ZSET of never-run jobs by run time;
//! - `{p}:retry:{kind}`    ZSET of failed jobs by next run time;
//! - `{p}:running:{kind}`  ZSET of leased jobs by lease deadline;
//! - `{p}:done:{kind}`    LIST of finished jobs, newest first;
//! - `{p}:dead:{kind}`    ZSET of dead jobs by time of death;
//! - `{p}:job:{id}`        HASH holding the record;
//! - `{p}:by:group:{g}`, `{p}:by:subject:{s}`, `{p}:by:trace:{t}`
//!   ZSETs of the ids of a group's, a subject's, a trace's jobs, by
//!   creation time: what the listing filters read instead of the backlog;
//! - `{p}:failed`          ZSET of the jobs that have failed, by time of
//!   the last failure: what the error filter reads.
//!
//! Every transition is one Lua script, so a crash between two steps cannot
//! lose a job; due jobs are promoted in bounded chunks, so a backlog of any
//! size costs the same per fetch. Designed for one Redis server (not Cluster).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio_util::sync::CancellationToken;

use super::{
    AdminOutcome, Completion, ExpiredLease, Failure, QueueBackend, QueueError, Wakers,
    waiting_status,
};
use crate::clock::now_ms;
use crate::job::{
    AttemptError, GroupWaiting, JobFilter, JobRecord, JobStatus, LeasedJob, NewJob, Pause,
    PushOutcome, QueueCounts, Scale, WorkerInfo,
};

/// Due jobs promoted per fetch: bounded so that `unpack` never overflows
/// Lua's stack and a fetch never blocks Redis for long.
const PROMOTE_CHUNK: usize = 1_000;
/// Jobs per push script call, and outcomes per completion call: bounded so
/// that Lua's `unpack` stays far below its stack limit (about 8,000 values).
const PUSH_CHUNK: usize = 1_000;
const COMPLETE_CHUNK: usize = 1_000;

pub struct RedisQueue {
    conn: ConnectionManager,
    client: redis::Client,
    prefix: String,
    wakers: Wakers,
    scripts: Scripts,
}

struct Scripts {
    push: Script,
    fetch: Script,
    complete: Script,
    fail: Script,
    release: Script,
    heartbeat: Script,
    expired: Script,
    counts: Script,
    retry: Script,
    kill: Script,
    reschedule: Script,
    waiting: Script,
    purge: Script,
    forget: Script,
}

/// Appends one JSON object to the JSON array text of `errors` (no cjson
/// round trip: it would print large integers in exponent form).
const LUA_APPEND_ERROR: &str = r#"
local function append_error(key, err_json)
  local errors = redis.call('HGET', key, 'errors')
  if not errors or errors == '[]' or errors == '' then
    errors = '[' .. err_json .. ']'
  else
    errors = string.sub(errors, 1, -2) .. ',' .. err_json .. ']'
  end
  redis.call('HSET', key, 'errors', errors)
end
"#;

/// The ready lists: one per (lane, group) of a kind, and the rotation of
/// the groups with a non-empty one. A group is in its lane's rotation
/// exactly while its list holds ids.
const LUA_LANES: &str = r#"
local function ready_key(p, kind, lane, grp)
  if lane == '0' and grp == '' then return p .. ':ready:' .. kind end
  return p .. ':ready:' .. kind .. ':' .. lane .. ':' .. grp
end
local function lane_of(key)
  local f = redis.call('HMGET', key, 'bulk', 'group')
  if f[1] == '1' then return '1', f[2] or '' end
  return '0', f[2] or ''
end
local function make_ready(p, kind, lane, grp, id, front)
  local list = ready_key(p, kind, lane, grp)
  local n
  if front then n = redis.call('LPUSH', list, id) else n = redis.call('RPUSH', list, id) end
  if n == 1 then redis.call('RPUSH', p .. ':lanes:' .. kind .. ':' .. lane, grp) end
end
local function unready(p, kind, lane, grp, id)
  local list = ready_key(p, kind, lane, grp)
  if redis.call('LREM', list, 0, id) > 0 and redis.call('LLEN', list) == 0 then
    redis.call('LREM', p .. ':lanes:' .. kind .. ':' .. lane, 0, grp)
  end
end
"#;

const PUSH: &str = r#"
local p = ARGV[1]
local now = tonumber(ARGV[2])
local out = {}
local ready = {}
local i = 3
while i <= #ARGV do
  local id, kind, payload, run_at, max, idem, trace, grp, subj, lane =
    ARGV[i], ARGV[i+1], ARGV[i+2], tonumber(ARGV[i+3]), ARGV[i+4], ARGV[i+5], ARGV[i+6],
    ARGV[i+7], ARGV[i+8], ARGV[i+9]
  i = i + 10
  local dup = false
  if idem ~= '' then
    local prev = redis.call('HGET', p .. ':idem', idem)
    if prev then
      table.insert(out, 'dup:' .. prev)
      dup = true
    else
      redis.call('HSET', p .. ':idem', idem, id)
    end
  end
  if not dup then
    local key = p .. ':job:' .. id
    if idem == '' and trace == '' and grp == '' and subj == '' and lane == '0' then
      redis.call('HSET', key, 'kind', kind, 'payload', payload, 'state', 'queued', 'attempts', 0,
        'max_attempts', max, 'run_at', run_at, 'created_at', now, 'updated_at', now, 'errors', '[]')
    else
      redis.call('HSET', key, 'kind', kind, 'payload', payload, 'state', 'queued', 'attempts', 0,
        'max_attempts', max, 'run_at', run_at, 'created_at', now, 'updated_at', now, 'errors', '[]',
        'idempotency_key', idem, 'trace_id', trace, 'group', grp, 'subject', subj, 'bulk', lane)
      if trace ~= '' then redis.call('ZADD', p .. ':by:trace:' .. trace, now, id) end
      if grp ~= '' then redis.call('ZADD', p .. ':by:group:' .. grp, now, id) end
      if subj ~= '' then redis.call('ZADD', p .. ':by:subject:' .. subj, now, id) end
    end
    if run_at <= now then
      local list = ready_key(p, kind, lane, grp)
      if not ready[list] then ready[list] = {kind = kind, lane = lane, grp = grp, ids = {}} end
      table.insert(ready[list].ids, id)
    else
      redis.call('ZADD', p .. ':sched:' .. kind, run_at, id)
      redis.call('SADD', p .. ':kinds', kind)
    end
    table.insert(out, 'new:' .. id)
  end
end
for list, r in pairs(ready) do
  if redis.call('RPUSH', list, unpack(r.ids)) == #r.ids then
    redis.call('RPUSH', p .. ':lanes:' .. r.kind .. ':' .. r.lane, r.grp)
  end
  redis.call('SADD', p .. ':kinds', r.kind)
  redis.call('PUBLISH', p .. ':wake', r.kind)
end
return out
"#;

const FETCH: &str = r#"
local p, kind = ARGV[1], ARGV[2]
local now, limit, deadline, worker, chunk =
  tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6], tonumber(ARGV[7])
for _, set in ipairs({p .. ':retry:' .. kind, p .. ':sched:' .. kind}) do
  local due = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, chunk)
  if #due > 0 then
    redis.call('ZREM', set, unpack(due))
    for _, id in ipairs(due) do
      local lane, grp = lane_of(p .. ':job:' .. id)
      make_ready(p, kind, lane, grp, id, false)
    end
  end
end
local out = {}
local leases = {}
local remaining = limit
local function lease(ids)
  for _, id in ipairs(ids) do
    local key = p .. ':job:' .. id
    local f = redis.call('HMGET', key, 'state', 'payload', 'max_attempts', 'trace_id', 'attempts')
    if f[1] == 'queued' then
      local attempts = tonumber(f[5]) + 1
      redis.call('HSET', key, 'state', 'running', 'attempts', attempts, 'lease_owner', worker,
        'lease_expires_at', deadline, 'updated_at', now)
      table.insert(leases, deadline)
      table.insert(leases, id)
      table.insert(out, {id, f[2], attempts, f[3], f[4] or ''})
    end
  end
end
-- Interactive lane first; within a lane the groups take turns, each an
-- equal share of what is left, the rotation moving on for the next fetch.
for _, lane in ipairs({'0', '1'}) do
  local rot = p .. ':lanes:' .. kind .. ':' .. lane
  local n = redis.call('LLEN', rot)
  while remaining > 0 and n > 0 do
    local share = math.max(1, math.floor(remaining / n))
    for _ = 1, n do
      if remaining <= 0 then break end
      local grp = redis.call('LMOVE', rot, rot, 'LEFT', 'RIGHT')
      if not grp then break end
      local list = ready_key(p, kind, lane, grp)
      local ids = redis.call('LPOP', list, math.min(share, remaining))
      if ids then
        remaining = remaining - #ids
        lease(ids)
      end
      if redis.call('LLEN', list) == 0 then redis.call('LREM', rot, 0, grp) end
    end
    n = redis.call('LLEN', rot)
  end
end
if #leases > 0 then
  redis.call('ZADD', p .. ':running:' .. kind, unpack(leases))
end
return out
"#;

const COMPLETE: &str = r#"
local p, worker, now = ARGV[1], ARGV[2], ARGV[3]
local n = 0
local by_kind = {}
local i = 4
while i <= #ARGV do
  local id, result = ARGV[i], ARGV[i+1]
  i = i + 2
  local key = p .. ':job:' .. id
  local f = redis.call('HMGET', key, 'state', 'lease_owner', 'kind')
  if f[1] == 'running' and f[2] == worker then
    -- The lease fields stay behind: they mean nothing once the state is not
    -- running, and deleting them would cost a call per job.
    redis.call('HSET', key, 'state', 'done', 'finished_at', now, 'updated_at', now, 'result', result)
    local k = f[3]
    if not by_kind[k] then by_kind[k] = {} end
    table.insert(by_kind[k], id)
    n = n + 1
  end
end
for kind, ids in pairs(by_kind) do
  redis.call('ZREM', p .. ':running:' .. kind, unpack(ids))
  -- A list, newest first: O(1) per job whatever the backlog (a sorted set
  -- grows O(log n) per insert), and completion order is time order.
  redis.call('LPUSH', p .. ':done:' .. kind, unpack(ids))
end
return n
"#;

const FAIL: &str = r#"
local p, worker, now, id, retry_at, err_json, message, lease_until =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local key = p .. ':job:' .. id
local f = redis.call('HMGET', key, 'state', 'lease_owner', 'kind', 'lease_expires_at')
if f[1] ~= 'running' or f[2] ~= worker then return 0 end
-- The rescuer's fence: the lease it found expired has not been renewed.
if lease_until ~= '' and f[4] ~= lease_until then return 0 end
local kind = f[3]
append_error(key, err_json)
redis.call('HSET', key, 'last_error', message, 'updated_at', now)
redis.call('ZADD', p .. ':failed', now, id)
redis.call('HDEL', key, 'lease_owner', 'lease_expires_at')
redis.call('ZREM', p .. ':running:' .. kind, id)
if retry_at == '' then
  redis.call('HSET', key, 'state', 'dead', 'finished_at', now)
  redis.call('ZADD', p .. ':dead:' .. kind, now, id)
else
  local at = tonumber(retry_at)
  redis.call('HSET', key, 'state', 'queued', 'run_at', at)
  if at <= now then
    local lane, grp = lane_of(key)
    make_ready(p, kind, lane, grp, id, false)
    redis.call('PUBLISH', p .. ':wake', kind)
  else
    redis.call('ZADD', p .. ':retry:' .. kind, at, id)
  end
end
return 1
"#;

const RELEASE: &str = r#"
local p, worker, now, at = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 5, #ARGV do
  local id = ARGV[i]
  local key = p .. ':job:' .. id
  local f = redis.call('HMGET', key, 'state', 'lease_owner', 'kind', 'attempts')
  if f[1] == 'running' and f[2] == worker then
    local attempts = math.max(tonumber(f[4]) - 1, 0)
    redis.call('HSET', key, 'state', 'queued', 'attempts', attempts, 'run_at', math.max(at, now),
      'updated_at', now)
    redis.call('HDEL', key, 'lease_owner', 'lease_expires_at')
    redis.call('ZREM', p .. ':running:' .. f[3], id)
    if at <= now then
      local lane, grp = lane_of(key)
      make_ready(p, f[3], lane, grp, id, true)
      redis.call('PUBLISH', p .. ':wake', f[3])
    elseif attempts == 0 then
      redis.call('ZADD', p .. ':sched:' .. f[3], at, id)
    else
      redis.call('ZADD', p .. ':retry:' .. f[3], at, id)
    end
  end
end
return 1
"#;

const HEARTBEAT: &str = r#"
local p, worker, deadline, now, info = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
for i = 6, #ARGV do
  local id = ARGV[i]
  local key = p .. ':job:' .. id
  local f = redis.call('HMGET', key, 'state', 'lease_owner', 'kind')
  if f[1] == 'running' and f[2] == worker then
    redis.call('HSET', key, 'lease_expires_at', deadline)
    redis.call('ZADD', p .. ':running:' .. f[3], deadline, id)
  end
end
redis.call('HSET', p .. ':workers', worker, info)
redis.call('ZADD', p .. ':beats', now, worker)
return 1
"#;

/// Running jobs whose lease ran out (ARGV[3] at most), read for the
/// rescuer; ids left in a running set by a job no longer running are
/// dropped from it on the way.
const EXPIRED: &str = r#"
local p, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for _, kind in ipairs(redis.call('SMEMBERS', p .. ':kinds')) do
  if #out >= limit then break end
  local running = p .. ':running:' .. kind
  local expired = redis.call('ZRANGEBYSCORE', running, '-inf', '(' .. now, 'LIMIT', 0, limit - #out)
  for _, id in ipairs(expired) do
    local f = redis.call('HMGET', p .. ':job:' .. id, 'state', 'lease_owner', 'attempts',
      'max_attempts', 'lease_expires_at')
    if f[1] == 'running' then
      table.insert(out, {id, kind, f[2] or '', f[3], f[4], f[5] or '0'})
    else
      redis.call('ZREM', running, id)
    end
  end
end
return out
"#;

const COUNTS: &str = r#"
local p, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for _, kind in ipairs(redis.call('SMEMBERS', p .. ':kinds')) do
  local sched, retry = p .. ':sched:' .. kind, p .. ':retry:' .. kind
  local due_s = redis.call('ZCOUNT', sched, '-inf', now)
  local due_r = redis.call('ZCOUNT', retry, '-inf', now)
  local oldest = ''
  local ready_n = 0
  -- Every ready list of the kind: the plain one, and each group's.
  local lists = {[p .. ':ready:' .. kind] = true}
  for _, lane in ipairs({'0', '1'}) do
    for _, grp in ipairs(redis.call('LRANGE', p .. ':lanes:' .. kind .. ':' .. lane, 0, -1)) do
      lists[ready_key(p, kind, lane, grp)] = true
    end
  end
  for list in pairs(lists) do
    ready_n = ready_n + redis.call('LLEN', list)
    local head = redis.call('LINDEX', list, 0)
    if head then
      local at = redis.call('HGET', p .. ':job:' .. head, 'run_at')
      if at and (oldest == '' or tonumber(at) < tonumber(oldest)) then oldest = at end
    end
  end
  for _, set in ipairs({sched, retry}) do
    local first = redis.call('ZRANGEBYSCORE', set, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
    if #first > 0 and (oldest == '' or tonumber(first[2]) < tonumber(oldest)) then
      oldest = first[2]
    end
  end
  table.insert(out, {kind,
    ready_n + due_s + due_r,
    redis.call('ZCARD', sched) - due_s,
    redis.call('ZCARD', p .. ':running:' .. kind),
    redis.call('ZCARD', retry) - due_r,
    redis.call('LLEN', p .. ':done:' .. kind),
    redis.call('ZCARD', p .. ':dead:' .. kind),
    oldest})
end
return out
"#;

/// Retries one job (ARGV[3]) or every dead job of a kind (ARGV[4], up to 1,000 a call).
const RETRY: &str = r#"
local p, now = ARGV[1], tonumber(ARGV[2])
local function retry_one(id)
  local key = p .. ':job:' .. id
  local f = redis.call('HMGET', key, 'state', 'kind', 'attempts', 'max_attempts')
  if not f[1] then return 'missing' end
  local kind = f[2]
  if f[1] == 'dead' then
    redis.call('ZREM', p .. ':dead:' .. kind, id)
  elseif f[1] == 'queued' then
    local a = redis.call('ZREM', p .. ':sched:' .. kind, id)
    local b = redis.call('ZREM', p .. ':retry:' .. kind, id)
    if a + b == 0 then return 'ok' end
  else
    return f[1]
  end
  local max = math.max(tonumber(f[4]), tonumber(f[3]) + 1)
  redis.call('HSET', key, 'state', 'queued', 'run_at', now, 'updated_at', now, 'max_attempts', max)
  redis.call('HDEL', key, 'finished_at')
  local lane, grp = lane_of(key)
  make_ready(p, kind, lane, grp, id, false)
  redis.call('PUBLISH', p .. ':wake', kind)
  return 'ok'
end
if ARGV[3] ~= '' then return retry_one(ARGV[3]) end
-- Only the jobs dead before the first batch (ARGV[5]): one retried by an
-- earlier batch that died again meanwhile is not retried twice.
local ids = redis.call('ZRANGEBYSCORE', p .. ':dead:' .. ARGV[4], '-inf', ARGV[5], 'LIMIT', 0, 1000)
for _, id in ipairs(ids) do retry_one(id) end
return #ids
"#;

const KILL: &str = r#"
local p, now, id, reason = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local key = p .. ':job:' .. id
local f = redis.call('HMGET', key, 'state', 'kind', 'attempts')
if not f[1] then return 'missing' end
if f[1] ~= 'queued' and f[1] ~= 'running' then return f[1] end
local kind = f[2]
local lane, grp = lane_of(key)
unready(p, kind, lane, grp, id)
redis.call('ZREM', p .. ':sched:' .. kind, id)
redis.call('ZREM', p .. ':retry:' .. kind, id)
redis.call('ZREM', p .. ':running:' .. kind, id)
append_error(key, ARGV[5])
redis.call('HSET', key, 'state', 'dead', 'finished_at', now, 'updated_at', now, 'last_error', reason)
redis.call('ZADD', p .. ':failed', now, id)
redis.call('HDEL', key, 'lease_owner', 'lease_expires_at')
redis.call('ZADD', p .. ':dead:' .. kind, now, id)
return 'ok'
"#;

/// Moves a waiting job (ARGV[3]) to run at ARGV[4]: out of whichever
/// structure holds it, into the one its new time and attempts call for.
const RESCHEDULE: &str = r#"
local p, now, id, at = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local key = p .. ':job:' .. id
local f = redis.call('HMGET', key, 'state', 'kind', 'attempts')
if not f[1] then return 'missing' end
if f[1] ~= 'queued' then return f[1] end
local kind = f[2]
local lane, grp = lane_of(key)
unready(p, kind, lane, grp, id)
redis.call('ZREM', p .. ':sched:' .. kind, id)
redis.call('ZREM', p .. ':retry:' .. kind, id)
redis.call('HSET', key, 'run_at', at, 'updated_at', now)
if at <= now then
  make_ready(p, kind, lane, grp, id, false)
  redis.call('PUBLISH', p .. ':wake', kind)
elseif tonumber(f[3]) == 0 then
  redis.call('ZADD', p .. ':sched:' .. kind, at, id)
else
  redis.call('ZADD', p .. ':retry:' .. kind, at, id)
end
return 'ok'
"#;

/// Due jobs not yet fetched per group: the length of every ready list the
/// rotations name, as `group, interactive, bulk` triples.
const WAITING: &str = r#"
local p = ARGV[1]
local totals = {}
local order = {}
for _, kind in ipairs(redis.call('SMEMBERS', p .. ':kinds')) do
  local seen = {}
  for _, lane in ipairs({'0', '1'}) do
    for _, grp in ipairs(redis.call('LRANGE', p .. ':lanes:' .. kind .. ':' .. lane, 0, -1)) do
      local list = ready_key(p, kind, lane, grp)
      if not seen[list] then
        seen[list] = true
        if not totals[grp] then
          totals[grp] = {0, 0}
          table.insert(order, grp)
        end
        local slot = 1
        if lane == '1' then slot = 2 end
        totals[grp][slot] = totals[grp][slot] + redis.call('LLEN', list)
      end
    end
  end
end
local out = {}
for _, grp in ipairs(order) do
  table.insert(out, grp)
  table.insert(out, totals[grp][1])
  table.insert(out, totals[grp][2])
end
return out
"#;

/// Puts each kind's plain ready list in the interactive rotation when it
/// holds ids and is not there (queues from before the fair share).
const ROTATE_PLAIN_LISTS: &str = r#"
local p = ARGV[1]
local n = 0
for _, kind in ipairs(redis.call('SMEMBERS', p .. ':kinds')) do
  local rot = p .. ':lanes:' .. kind .. ':0'
  if redis.call('LLEN', p .. ':ready:' .. kind) > 0 and not redis.call('LPOS', rot, '') then
    redis.call('RPUSH', rot, '')
    n = n + 1
  end
end
return n
"#;

const PURGE: &str = r#"
local p, cutoff = ARGV[1], tonumber(ARGV[2])
local n = 0
for _, kind in ipairs(redis.call('SMEMBERS', p .. ':kinds')) do
  local done = p .. ':done:' .. kind
  -- Oldest at the tail: pop while the tail finished before the cutoff.
  for _ = 1, 1000 do
    local id = redis.call('LINDEX', done, -1)
    if not id then break end
    local key = p .. ':job:' .. id
    local f = redis.call('HMGET', key, 'finished_at', 'idempotency_key', 'state', 'trace_id',
      'group', 'subject')
    if f[3] == 'done' and tonumber(f[1]) >= cutoff then break end
    redis.call('RPOP', done)
    if f[3] == 'done' then
      if f[2] and f[2] ~= '' then redis.call('HDEL', p .. ':idem', f[2]) end
      for j, index in ipairs({'trace', 'group', 'subject'}) do
        local v = f[3 + j]
        if v and v ~= '' then redis.call('ZREM', p .. ':by:' .. index .. ':' .. v, id) end
      end
      redis.call('ZREM', p .. ':failed', id)
      redis.call('DEL', key)
      n = n + 1
    end
  end
end
local stale = redis.call('ZRANGEBYSCORE', p .. ':beats', '-inf', '(' .. cutoff)
for _, w in ipairs(stale) do
  redis.call('HDEL', p .. ':workers', w)
  redis.call('ZREM', p .. ':beats', w)
end
return n
"#;

/// Deletes the jobs ARGV[2..] but running ones: the hash and the id from
/// every structure that may hold it (ready list, schedules, dead set, done
/// list, failed set, idempotency map, indexes).
const FORGET: &str = r#"
local p = ARGV[1]
local n = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local key = p .. ':job:' .. id
  local f = redis.call('HMGET', key, 'state', 'kind', 'idempotency_key', 'trace_id', 'group', 'subject')
  if f[1] and f[1] ~= 'running' then
    local kind = f[2]
    if f[1] == 'queued' then
      local lane, grp = lane_of(key)
      unready(p, kind, lane, grp, id)
    end
    redis.call('ZREM', p .. ':sched:' .. kind, id)
    redis.call('ZREM', p .. ':retry:' .. kind, id)
    redis.call('ZREM', p .. ':dead:' .. kind, id)
    redis.call('LREM', p .. ':done:' .. kind, 0, id)
    redis.call('ZREM', p .. ':failed', id)
    if f[3] and f[3] ~= '' and redis.call('HGET', p .. ':idem', f[3]) == id then
      redis.call('HDEL', p .. ':idem', f[3])
    end
    for j, index in ipairs({'trace', 'group', 'subject'}) do
      local v = f[3 + j]
      if v and v ~= '' then redis.call('ZREM', p .. ':by:' .. index .. ':' .. v, id) end
    end
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
"#;

impl Scripts {
    fn new() -> Self {
        let with_errors =
            |body: &str| Script::new(&format!("{LUA_APPEND_ERROR}\n{LUA_LANES}\n{body}"));
        let with_lanes = |body: &str| Script::new(&format!("{LUA_LANES}\n{body}"));
        Scripts {
            push: with_lanes(PUSH),
            fetch: with_lanes(FETCH),
            complete: Script::new(COMPLETE),
            fail: with_errors(FAIL),
            release: with_lanes(RELEASE),
            heartbeat: Script::new(HEARTBEAT),
            expired: Script::new(EXPIRED),
            counts: with_lanes(COUNTS),
            retry: with_lanes(RETRY),
            kill: with_errors(KILL),
            reschedule: with_lanes(RESCHEDULE),
            waiting: with_lanes(WAITING),
            purge: Script::new(PURGE),
            forget: with_lanes(FORGET),
        }
    }
}

fn opt_ms(map: &HashMap<String, String>, field: &str) -> Option<i64> {
    map.get(field).and_then(|v| v.parse().ok())
}

impl RedisQueue {
    /// Connects; the connection manager reconnects by itself after a Redis
    /// restart, and scripts are reloaded on `NOSCRIPT`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisQueue, QueueError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2);
        let mut conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        // A queue written before the fair share has due ids in the plain
        // lists without their place in the rotation: give it to them.
        let _: i64 = Script::new(ROTATE_PLAIN_LISTS)
            .arg(prefix)
            .invoke_async(&mut conn)
            .await?;
        Ok(RedisQueue {
            conn,
            client,
            prefix: prefix.to_string(),
            wakers: Wakers::default(),
            scripts: Scripts::new(),
        })
    }

    /// Deletes every key under this queue's prefix (tests and benchmarks).
    pub async fn destroy(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                deleted += conn.del::<_, u64>(keys).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// Every ready list of `kind`: the plain one and each group's (the
    /// lanes' rotations name them).
    async fn ready_lists(&self, kind: &str) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        let mut lists = vec![self.key(&format!("ready:{kind}"))];
        for lane in ["0", "1"] {
            let groups: Vec<String> = conn
                .lrange(self.key(&format!("lanes:{kind}:{lane}")), 0, -1)
                .await?;
            for g in groups {
                if lane == "0" && g.is_empty() {
                    continue;
                }
                lists.push(self.key(&format!("ready:{kind}:{lane}:{g}")));
            }
        }
        lists.dedup();
        Ok(lists)
    }

    async fn kinds(&self) -> Result<Vec<String>, QueueError> {
        let mut conn = self.conn.clone();
        let mut kinds: Vec<String> = conn.smembers(self.key("kinds")).await?;
        kinds.sort();
        Ok(kinds)
    }

    async fn records(&self, ids: &[String]) -> Result<Vec<JobRecord>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.key(&format!("job:{id}")));
        }
        let mut conn = self.conn.clone();
        let maps: Vec<HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let now = now_ms();
        ids.iter()
            .zip(maps)
            .filter(|(_, m)| !m.is_empty())
            .map(|(id, m)| record_from_hash(id, &m, now))
            .collect()
    }
}

/// Most ids one filtered listing reads from an index: a listing is a
/// window, not an export (bulk actions repeat until nothing matches).
const INDEX_READ_CAP: usize = 50_000;
/// Ids read from an index per round trip.
const INDEX_PAGE: isize = 1_000;

impl RedisQueue {
    /// The index a filter is best read from: the most selective field set.
    fn index_for(&self, filter: &JobFilter) -> Option<String> {
        if let Some(s) = &filter.subject {
            Some(self.key(&format!("by:subject:{s}")))
        } else if let Some(t) = &filter.trace_id {
            Some(self.key(&format!("by:trace:{t}")))
        } else if let Some(g) = &filter.group {
            Some(self.key(&format!("by:group:{g}")))
        } else {
            filter.error.as_ref().map(|_| self.key("failed"))
        }
    }

    /// The jobs of one index matching `filter`, newest change first, as
    /// the SQL backends order them. Reads the newest [`INDEX_READ_CAP`].
    async fn list_from_index(
        &self,
        index: &str,
        filter: &JobFilter,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let mut found: Vec<JobRecord> = Vec::new();
        let mut start: isize = 0;
        while (start as usize) < INDEX_READ_CAP {
            let ids: Vec<String> = conn.zrevrange(index, start, start + INDEX_PAGE - 1).await?;
            if ids.is_empty() {
                break;
            }
            start += ids.len() as isize;
            found.extend(
                self.records(&ids)
                    .await?
                    .into_iter()
                    .filter(|r| filter.matches(r)),
            );
        }
        found.sort_by(|a, b| b.updated_at_ms.cmp(&a.updated_at_ms).then(b.id.cmp(&a.id)));
        found.truncate(limit);
        Ok(found)
    }
}

fn record_from_hash(
    id: &str,
    m: &HashMap<String, String>,
    now: i64,
) -> Result<JobRecord, QueueError> {
    let corrupt = |why: String| QueueError::Corrupt {
        id: id.to_string(),
        why,
    };
    let get = |f: &str| {
        m.get(f)
            .cloned()
            .ok_or_else(|| corrupt(format!("no field {f}")))
    };
    let num = |f: &str| -> Result<i64, QueueError> {
        get(f)?.parse().map_err(|e| corrupt(format!("{f}: {e}")))
    };
    let attempts = num("attempts")? as u32;
    let run_at = num("run_at")?;
    let status = match get("state")?.as_str() {
        "queued" => waiting_status(run_at, attempts, now),
        "running" => JobStatus::Running,
        "done" => JobStatus::Done,
        "dead" => JobStatus::Dead,
        other => return Err(corrupt(format!("unknown state {other}"))),
    };
    Ok(JobRecord {
        id: id.to_string(),
        kind: get("kind")?,
        payload: serde_json::from_str(&get("payload")?)
            .map_err(|e| corrupt(format!("payload: {e}")))?,
        status,
        attempts,
        max_attempts: num("max_attempts")? as u32,
        run_at_ms: run_at,
        created_at_ms: num("created_at")?,
        updated_at_ms: num("updated_at")?,
        finished_at_ms: opt_ms(m, "finished_at"),
        lease_owner: m
            .get("lease_owner")
            .filter(|_| status == JobStatus::Running)
            .cloned(),
        lease_expires_at_ms: opt_ms(m, "lease_expires_at").filter(|_| status == JobStatus::Running),
        idempotency_key: m.get("idempotency_key").filter(|s| !s.is_empty()).cloned(),
        trace_id: m.get("trace_id").filter(|s| !s.is_empty()).cloned(),
        group: m.get("group").filter(|s| !s.is_empty()).cloned(),
        subject: m.get("subject").filter(|s| !s.is_empty()).cloned(),
        bulk: m.get("bulk").is_some_and(|b| b == "1"),
        last_error: m.get("last_error").cloned(),
        errors: serde_json::from_str(m.get("errors").map(String::as_str).unwrap_or("[]"))
            .map_err(|e| corrupt(format!("errors: {e}")))?,
        result: m
            .get("result")
            .map(|r| serde_json::from_str(r))
            .transpose()
            .map_err(|e| corrupt(format!("result: {e}")))?,
    })
}

fn admin_outcome(answer: &str) -> AdminOutcome {
    match answer {
        "ok" => AdminOutcome::Applied,
        "missing" => AdminOutcome::NotFound,
        "running" => AdminOutcome::Refused(JobStatus::Running),
        "done" => AdminOutcome::Refused(JobStatus::Done),
        _ => AdminOutcome::Refused(JobStatus::Dead),
    }
}

#[async_trait]
impl QueueBackend for RedisQueue {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn wakers(&self) -> &Wakers {
        &self.wakers
    }

    /// Subscribes to `{p}:wake` and wakes local fetchers; resubscribes after
    /// a lost connection. The poll interval covers any gap.
    async fn listen(&self, stop: CancellationToken) {
        let channel = self.key("wake");
        while !stop.is_cancelled() {
            match self.client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if let Err(e) = pubsub.subscribe(&channel).await {
                        tracing::warn!(error = %e, "cannot subscribe to wake-ups; retrying");
                    } else {
                        let mut stream = pubsub.on_message();
                        loop {
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                msg = stream.next() => match msg {
                                    Some(msg) => {
                                        if let Ok(kind) = msg.get_payload::<String>() {
                                            self.wakers.wake(&kind);
                                        }
                                    }
                                    None => break,
                                },
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "wake-up subscription lost; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn push_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<PushOutcome>, QueueError> {
        let mut out = Vec::with_capacity(jobs.len());
        let mut conn = self.conn.clone();
        for chunk in jobs.chunks(PUSH_CHUNK) {
            let now = now_ms();
            let mut inv = self.scripts.push.prepare_invoke();
            inv.arg(&self.prefix).arg(now);
            for j in chunk {
                inv.arg(uuid::Uuid::now_v7().to_string())
                    .arg(&j.kind)
                    .arg(j.payload.to_string())
                    .arg(j.run_at_ms.unwrap_or(now))
                    .arg(j.max_attempts)
                    .arg(j.idempotency_key.as_deref().unwrap_or(""))
                    .arg(j.trace_id.as_deref().unwrap_or(""))
                    .arg(j.group.as_deref().unwrap_or(""))
                    .arg(j.subject.as_deref().unwrap_or(""))
                    .arg(if j.bulk { "1" } else { "0" });
            }
            let answers: Vec<String> = inv.invoke_async(&mut conn).await?;
            for a in answers {
                out.push(match a.split_once(':') {
                    Some(("new", id)) => PushOutcome::Created(id.to_string()),
                    Some((_, id)) => PushOutcome::Duplicate(id.to_string()),
                    None => {
                        return Err(QueueError::Corrupt {
                            id: a,
                            why: "unexpected push answer".into(),
                        });
                    }
                });
            }
            // Wake local fetchers at once; other processes hear the PUBLISH.
            let mut kinds: Vec<&str> = chunk.iter().map(|j| j.kind.as_str()).collect();
            kinds.dedup();
            for k in kinds {
                self.wakers.wake(k);
            }
        }
        Ok(out)
    }

    async fn fetch(
        &self,
        kind: &str,
        worker: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<LeasedJob>, QueueError> {
        let now = now_ms();
        let mut conn = self.conn.clone();
        let rows: Vec<(String, String, u32, u32, String)> = self
            .scripts
            .fetch
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(kind)
            .arg(now)
            .arg(limit)
            .arg(now + lease.as_millis() as i64)
            .arg(worker)
            .arg(PROMOTE_CHUNK)
            .invoke_async(&mut conn)
            .await?;
        rows.into_iter()
            .map(|(id, payload, attempt, max_attempts, trace)| {
                Ok(LeasedJob {
                    payload: super::leased_payload(&id, &payload)?,
                    id,
                    kind: kind.to_string(),
                    attempt,
                    max_attempts,
                    trace_id: (!trace.is_empty()).then_some(trace),
                })
            })
            .collect()
    }

    async fn complete(&self, worker: &str, done: &[Completion]) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        for chunk in done.chunks(COMPLETE_CHUNK) {
            let mut inv = self.scripts.complete.prepare_invoke();
            inv.arg(&self.prefix).arg(worker).arg(now_ms());
            for c in chunk {
                inv.arg(&c.id).arg(c.result.to_string());
            }
            let _: i64 = inv.invoke_async(&mut conn).await?;
        }
        Ok(())
    }

    async fn fail(&self, worker: &str, failure: &Failure) -> Result<bool, QueueError> {
        let error = serde_json::to_string(&failure.error).map_err(|e| QueueError::Corrupt {
            id: failure.id.clone(),
            why: e.to_string(),
        })?;
        let mut conn = self.conn.clone();
        let changed: i64 = self
            .scripts
            .fail
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(worker)
            .arg(now_ms())
            .arg(&failure.id)
            .arg(
                failure
                    .retry_at_ms
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            )
            .arg(error)
            .arg(&failure.error.message)
            .arg(
                failure
                    .lease_expires_at_ms
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            )
            .invoke_async(&mut conn)
            .await?;
        Ok(changed == 1)
    }

    async fn release(
        &self,
        worker: &str,
        ids: &[String],
        run_at_ms: i64,
    ) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut inv = self.scripts.release.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(worker)
            .arg(now_ms())
            .arg(run_at_ms);
        for id in ids {
            inv.arg(id);
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    async fn heartbeat(
        &self,
        worker: &WorkerInfo,
        running: &[String],
        lease: Duration,
    ) -> Result<(), QueueError> {
        let now = now_ms();
        let info = serde_json::to_string(worker).map_err(|e| QueueError::Corrupt {
            id: worker.name.clone(),
            why: e.to_string(),
        })?;
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.arg(&self.prefix)
            .arg(&worker.name)
            .arg(now + lease.as_millis() as i64)
            .arg(now)
            .arg(info);
        for id in running {
            inv.arg(id);
        }
        let mut conn = self.conn.clone();
        let _: i64 = inv.invoke_async(&mut conn).await?;
        Ok(())
    }

    async fn deregister(&self, worker: &str) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .hdel(self.key("workers"), worker)
            .zrem(self.key("beats"), worker)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn expired(&self, limit: usize) -> Result<Vec<ExpiredLease>, QueueError> {
        let mut conn = self.conn.clone();
        let rows: Vec<Vec<String>> = self
            .scripts
            .expired
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(limit)
            .invoke_async(&mut conn)
            .await?;
        rows.into_iter()
            .map(|r| {
                let corrupt = |why: &str| QueueError::Corrupt {
                    id: r.first().cloned().unwrap_or_default(),
                    why: why.to_string(),
                };
                let [id, kind, owner, attempts, max_attempts, expires] =
                    <[String; 6]>::try_from(r.clone()).map_err(|_| corrupt("short lease row"))?;
                Ok(ExpiredLease {
                    id,
                    kind,
                    owner,
                    attempts: attempts.parse().map_err(|_| corrupt("attempts"))?,
                    max_attempts: max_attempts.parse().map_err(|_| corrupt("max_attempts"))?,
                    lease_expires_at_ms: expires
                        .parse()
                        .map_err(|_| corrupt("lease_expires_at"))?,
                })
            })
            .collect()
    }

    async fn purge(&self, retention: Duration) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let n: u64 = self
            .scripts
            .purge
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(now_ms() - retention.as_millis() as i64)
            .invoke_async(&mut conn)
            .await?;
        Ok(n)
    }

    async fn purge_dead(&self, retention: Duration) -> Result<u64, QueueError> {
        let cutoff = now_ms() - retention.as_millis() as i64;
        let mut conn = self.conn.clone();
        let mut n = 0;
        for kind in self.kinds().await? {
            // Each dead set is scored by the time of death.
            loop {
                let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                    .arg(self.key(&format!("dead:{kind}")))
                    .arg("-inf")
                    .arg(format!("({cutoff}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1_000)
                    .query_async(&mut conn)
                    .await?;
                if ids.is_empty() {
                    break;
                }
                let gone = self.forget(&ids).await?;
                n += gone;
                if gone == 0 {
                    break;
                }
            }
        }
        Ok(n)
    }

    async fn forget(&self, ids: &[String]) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let mut n = 0;
        // Bounded scripts: a long one would block the server for others.
        for chunk in ids.chunks(100) {
            let mut call = self.scripts.forget.prepare_invoke();
            call.arg(&self.prefix);
            for id in chunk {
                call.arg(id);
            }
            let gone: u64 = call.invoke_async(&mut conn).await?;
            n += gone;
        }
        Ok(n)
    }

    async fn counts(&self) -> Result<Vec<QueueCounts>, QueueError> {
        let now = now_ms();
        let mut conn = self.conn.clone();
        let rows: Vec<(String, u64, u64, u64, u64, u64, u64, String)> = self
            .scripts
            .counts
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(now)
            .invoke_async(&mut conn)
            .await?;
        let mut out: Vec<QueueCounts> = rows
            .into_iter()
            .map(
                |(kind, pending, scheduled, running, retrying, done, dead, oldest)| QueueCounts {
                    kind,
                    pending,
                    scheduled,
                    running,
                    retrying,
                    done,
                    dead,
                    oldest_pending_age_ms: oldest.parse::<i64>().ok().map(|t| (now - t).max(0)),
                    paused: None,
                },
            )
            .collect();
        out.sort_by(|a, b| a.kind.cmp(&b.kind));
        Ok(out)
    }

    async fn list(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, QueueError> {
        let limit = filter.limit.max(1);
        if let Some(index) = self.index_for(filter) {
            return self.list_from_index(&index, filter, limit).await;
        }
        let kinds = match &filter.kind {
            Some(k) => vec![k.clone()],
            None => self.kinds().await?,
        };
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = Vec::new();
        // Read a bounded window from each structure, then filter by the
        // derived status: a due scheduled job shows as pending, as on SQLite.
        for kind in &kinds {
            let k = |s: &str| self.key(&format!("{s}:{kind}"));
            let window = limit as isize;
            let mut candidates: Vec<String> = Vec::new();
            let wanted = |s: JobStatus| filter.status.is_none_or(|f| f == s);
            if wanted(JobStatus::Pending) {
                for list in self.ready_lists(kind).await? {
                    candidates.extend(conn.lrange::<_, Vec<String>>(list, 0, window - 1).await?);
                }
            }
            for set in ["sched", "retry"] {
                if wanted(JobStatus::Pending)
                    || wanted(JobStatus::Scheduled)
                    || wanted(JobStatus::Retrying)
                {
                    candidates.extend(conn.zrange::<_, Vec<String>>(k(set), 0, window - 1).await?);
                }
            }
            if wanted(JobStatus::Running) {
                candidates.extend(
                    conn.zrange::<_, Vec<String>>(k("running"), 0, window - 1)
                        .await?,
                );
            }
            if wanted(JobStatus::Done) {
                candidates.extend(
                    conn.lrange::<_, Vec<String>>(k("done"), 0, window - 1)
                        .await?,
                );
            }
            if wanted(JobStatus::Dead) {
                candidates.extend(
                    conn.zrevrange::<_, Vec<String>>(k("dead"), 0, window - 1)
                        .await?,
                );
            }
            ids.extend(candidates);
        }
        let mut records: Vec<JobRecord> = self
            .records(&ids)
            .await?
            .into_iter()
            .filter(|r| filter.matches(r))
            .collect();
        records.sort_by(|a, b| b.updated_at_ms.cmp(&a.updated_at_ms).then(b.id.cmp(&a.id)));
        records.dedup_by(|a, b| a.id == b.id);
        records.truncate(limit);
        Ok(records)
    }

    async fn waiting_by_group(&self, limit: usize) -> Result<Vec<GroupWaiting>, QueueError> {
        let mut conn = self.conn.clone();
        // Flat `group, interactive, bulk` triples; integers read as text.
        let flat: Vec<String> = self
            .scripts
            .waiting
            .prepare_invoke()
            .arg(&self.prefix)
            .invoke_async(&mut conn)
            .await?;
        let number = |v: &str| v.parse::<u64>().unwrap_or(0);
        let groups = flat
            .chunks_exact(3)
            .map(|t| GroupWaiting {
                group: (!t[0].is_empty()).then(|| t[0].clone()),
                interactive: number(&t[1]),
                bulk: number(&t[2]),
            })
            .collect();
        Ok(crate::job::most_waiting_first(groups, limit))
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, QueueError> {
        Ok(self.records(&[id.to_string()]).await?.pop())
    }

    async fn get_by_key(&self, key: &str) -> Result<Option<JobRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let id: Option<String> = conn.hget(self.key("idem"), key).await?;
        match id {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }

    async fn retry(&self, id: &str) -> Result<AdminOutcome, QueueError> {
        let mut conn = self.conn.clone();
        let answer: String = self
            .scripts
            .retry
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(id)
            .arg("")
            .invoke_async(&mut conn)
            .await?;
        Ok(admin_outcome(&answer))
    }

    async fn retry_all_dead(&self, kind: Option<&str>) -> Result<u64, QueueError> {
        let kinds = match kind {
            Some(k) => vec![k.to_string()],
            None => self.kinds().await?,
        };
        let mut conn = self.conn.clone();
        let mut total = 0;
        let dead_before = now_ms();
        for k in kinds {
            loop {
                let n: u64 = self
                    .scripts
                    .retry
                    .prepare_invoke()
                    .arg(&self.prefix)
                    .arg(now_ms())
                    .arg("")
                    .arg(&k)
                    .arg(dead_before)
                    .invoke_async(&mut conn)
                    .await?;
                total += n;
                if n == 0 {
                    break;
                }
            }
        }
        Ok(total)
    }

    async fn kill(&self, id: &str, reason: &str) -> Result<AdminOutcome, QueueError> {
        let now = now_ms();
        let attempts = self.get(id).await?.map(|j| j.attempts).unwrap_or(0);
        let error = AttemptError {
            attempt: attempts,
            at_ms: now,
            class: "killed".into(),
            message: reason.to_string(),
        };
        let mut conn = self.conn.clone();
        let answer: String = self
            .scripts
            .kill
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(now)
            .arg(id)
            .arg(reason)
            .arg(serde_json::to_string(&error).unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        Ok(admin_outcome(&answer))
    }

    async fn reschedule(&self, id: &str, run_at_ms: i64) -> Result<AdminOutcome, QueueError> {
        let mut conn = self.conn.clone();
        let answer: String = self
            .scripts
            .reschedule
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(now_ms())
            .arg(id)
            .arg(run_at_ms)
            .invoke_async(&mut conn)
            .await?;
        // Fetchers hear the script's PUBLISH, here as elsewhere.
        Ok(admin_outcome(&answer))
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, QueueError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(self.key("workers")).await?;
        let mut out: Vec<WorkerInfo> = all
            .values()
            .filter_map(|v| serde_json::from_str::<WorkerInfo>(v).ok())
            .collect();
        let beats: Vec<(String, i64)> = conn.zrange_withscores(self.key("beats"), 0, -1).await?;
        let beats: HashMap<String, i64> = beats.into_iter().collect();
        for w in &mut out {
            if let Some(b) = beats.get(&w.name) {
                w.last_heartbeat_ms = *b;
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn pause(&self, pause: &Pause) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let value = serde_json::to_string(pause).map_err(|e| QueueError::Corrupt {
            id: pause.kind.clone(),
            why: e.to_string(),
        })?;
        Ok(conn.hset_nx(self.key("paused"), &pause.kind, value).await?)
    }

    async fn resume(&self, kind: &str) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let removed: i64 = conn.hdel(self.key("paused"), kind).await?;
        Ok(removed == 1)
    }

    async fn paused(&self) -> Result<Vec<Pause>, QueueError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(self.key("paused")).await?;
        // An entry that does not read still pauses its kind (the safe
        // side), and says so where operators look.
        let mut out: Vec<Pause> = all
            .into_iter()
            .map(|(kind, v)| {
                serde_json::from_str::<Pause>(&v).unwrap_or_else(|_| Pause {
                    kind,
                    reason: "unreadable pause record: resume the kind to clear it".into(),
                    by: String::new(),
                    at_ms: 0,
                })
            })
            .collect();
        out.sort_by(|a, b| a.kind.cmp(&b.kind));
        Ok(out)
    }

    async fn scale(&self, scale: &Scale) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let value = serde_json::to_string(scale).map_err(|e| QueueError::Corrupt {
            id: scale.kind.clone(),
            why: e.to_string(),
        })?;
        let _: i64 = conn.hset(self.key("scales"), &scale.kind, value).await?;
        Ok(())
    }

    async fn unscale(&self, kind: &str) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let removed: i64 = conn.hdel(self.key("scales"), kind).await?;
        Ok(removed == 1)
    }

    async fn scales(&self) -> Result<Vec<Scale>, QueueError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = conn.hgetall(self.key("scales")).await?;
        // An entry that does not read is left out: the configured
        // concurrency holds for that kind.
        let mut out: Vec<Scale> = all
            .values()
            .filter_map(|v| serde_json::from_str::<Scale>(v).ok())
            .map(|mut s| {
                s.concurrency = s.concurrency.clamp(1, crate::job::MAX_CONCURRENCY);
                s
            })
            .collect();
        out.sort_by(|a, b| a.kind.cmp(&b.kind));
        Ok(out)
    }
}
