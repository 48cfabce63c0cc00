//! The one way this backend talks to Redis: a Lua script (`lua/`), each
//! the shared library (`lua/lib.lua`) and its own body, run atomically
//! with EVALSHA (loaded again after a restart of Redis). Every job
//! transition is one script, fenced by lease id inside it where a lease
//! is named; Redis's `TIME` is the clock, so the brokers' clocks do not
//! matter. The field names of a job hash, the channels, and what a script
//! answers are defined here once and handed to the Lua side.
//!
//! Failures are classified once, here: the connection (lost, refused,
//! timed out, Redis loading its data or a read-only replica) is
//! [`BackendError::Unavailable`] with a message of ours, and the
//! connection is made again; Redis at its `maxmemory` is a refusal for
//! lack of room; anything else (a script error: a defect) is logged in
//! full and answered [`BackendError::Internal`].

use std::sync::OnceLock;

use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};
use tracing::{debug, error};
use uuid::Uuid;

use super::connect::Connection;
use crate::backend::BackendError;

/// The fields of a job hash a script answers with, in this order.
/// (`gp`, `gm`, `ga` and `gt` are the last progress: its percent, message,
/// attempt and time; `rs` the result an Ack left.)
pub const FIELDS: [&str; 25] = [
    "id", "q", "t", "p", "h", "pr", "s", "a", "m", "to", "c", "e", "ct", "ra", "sq", "li", "w",
    "le", "ft", "gp", "gm", "ga", "gt", "rs", "fk",
];

/// The fields the scripts read of a job to act on it (no payload).
const LOADED: [&str; 18] = [
    "id", "q", "t", "pr", "s", "a", "m", "c", "k", "ra", "sq", "li", "w", "b", "st", "lm", "le",
    "fk",
];

/// The channel every broker subscribes to: `ready` (a job became READY)
/// or `scheduled` (a job was scheduled).
pub const WAKE_CHANNEL: &str = "sluice:wake";

/// A broker's own channel is this and its id: `stream:job` entries of its
/// streams' leases that ended through another broker.
pub const FREED_PREFIX: &str = "sluice:freed:";

/// Every script.
pub struct Scripts {
    pub enqueue: Script,
    pub claim: Script,
    pub adopt: Script,
    pub ready: Script,
    pub held: Script,
    pub ack: Script,
    pub peek: Script,
    pub fail: Script,
    pub release: Script,
    pub extend: Script,
    pub progress: Script,
    pub due: Script,
    pub maintain: Script,
    pub cancel: Script,
    pub retry: Script,
    pub purge: Script,
    pub pause: Script,
    pub limits: Script,
    pub flow_read: Script,
    pub limited: Script,
    pub get: Script,
    pub list: Script,
    pub queues_of: Script,
    pub stats: Script,
    pub unfinished: Script,
    pub heartbeat: Script,
    pub leave: Script,
    pub workers: Script,
    pub sweep: Script,
    pub schedule_put: Script,
    pub schedule_fire: Script,
    pub schedule_read: Script,
    pub source_read: Script,
    pub source_put: Script,
    pub source_commit: Script,
}

/// The scripts, built once.
pub fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let script = |body: &str| Script::new(&format!("{}\n{body}", prelude()));
        // Work that must go on with Redis at its maxmemory: jobs that
        // finish, expire or are purged are what frees room. Only enqueue
        // and retry (which add jobs) are refused then, as on the embedded
        // store past --max-memory.
        let even_when_full =
            |body: &str| Script::new(&format!("#!lua flags=allow-oom\n{}\n{body}", prelude()));
        Scripts {
            enqueue: script(include_str!("lua/enqueue.lua")),
            claim: even_when_full(include_str!("lua/claim.lua")),
            adopt: even_when_full(include_str!("lua/adopt.lua")),
            ready: script(include_str!("lua/ready.lua")),
            held: script(include_str!("lua/held.lua")),
            ack: even_when_full(include_str!("lua/ack.lua")),
            peek: script(include_str!("lua/peek.lua")),
            fail: even_when_full(include_str!("lua/fail.lua")),
            release: even_when_full(include_str!("lua/release.lua")),
            extend: even_when_full(include_str!("lua/extend.lua")),
            progress: even_when_full(include_str!("lua/progress.lua")),
            due: script(include_str!("lua/due.lua")),
            maintain: even_when_full(include_str!("lua/maintain.lua")),
            cancel: even_when_full(include_str!("lua/cancel.lua")),
            retry: script(include_str!("lua/retry.lua")),
            purge: even_when_full(include_str!("lua/purge.lua")),
            pause: even_when_full(include_str!("lua/pause.lua")),
            limits: even_when_full(include_str!("lua/limits.lua")),
            flow_read: script(include_str!("lua/flow_read.lua")),
            limited: script("return redis.call('SMEMBERS', LIMITED)"),
            get: script(include_str!("lua/get.lua")),
            list: script(include_str!("lua/list.lua")),
            queues_of: script(include_str!("lua/queues_of.lua")),
            stats: script(include_str!("lua/stats.lua")),
            unfinished: script(include_str!("lua/unfinished.lua")),
            heartbeat: even_when_full(include_str!("lua/heartbeat.lua")),
            leave: even_when_full(include_str!("lua/leave.lua")),
            workers: script(include_str!("lua/workers.lua")),
            sweep: even_when_full(include_str!("lua/sweep.lua")),
            schedule_put: script(include_str!("lua/schedule_put.lua")),
            // enqueue.lua's body as a function, run once the schedule's
            // revision is checked.
            schedule_fire: script(&format!(
                "local function enqueue()\n{}\nend\n{}",
                include_str!("lua/enqueue.lua"),
                include_str!("lua/schedule_fire.lua")
            )),
            schedule_read: script(include_str!("lua/schedule_read.lua")),
            source_read: script(include_str!("lua/source_read.lua")),
            source_put: script(include_str!("lua/source_put.lua")),
            // enqueue.lua's body as a function, run for each job once the
            // row's epoch and position are checked.
            source_commit: script(&format!(
                "local function enqueue()\n{}\nend\n{}",
                include_str!("lua/enqueue.lua"),
                include_str!("lua/source_commit.lua")
            )),
        }
    })
}

/// The constants the Lua side takes from here, then the library.
fn prelude() -> String {
    let list = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "local FIELDS = {{{}}}\nlocal LOADED = {{{}}}\nlocal WAKE_CHANNEL = '{WAKE_CHANNEL}'\n\
         local FREED_PREFIX = '{FREED_PREFIX}'\n{}",
        list(&FIELDS),
        list(&LOADED),
        include_str!("lua/lib.lua")
    )
}

/// The arguments of one script call: this broker and the retention
/// first, as every script expects, then the script's own.
pub struct Call {
    args: Vec<Vec<u8>>,
}

impl Call {
    /// A call by broker `me`, whose finished jobs are kept `retention_us`.
    pub fn new(me: Uuid, retention_us: u64) -> Self {
        Self {
            args: vec![
                me.to_string().into_bytes(),
                retention_us.to_string().into_bytes(),
            ],
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl redis::ToRedisArgs) -> Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// Adds arguments.
    pub fn args<T: redis::ToRedisArgs>(mut self, args: impl IntoIterator<Item = T>) -> Self {
        for arg in args {
            arg.write_redis_args(&mut self.args);
        }
        self
    }

    /// Runs `script` with these arguments on `conn`.
    ///
    /// # Errors
    /// As classified in the module doc.
    pub async fn run(self, conn: &Connection, script: &Script) -> Result<Value, BackendError> {
        let mut connection = conn.get().await.map_err(|e| {
            debug!(error = %e, "Redis connection");
            BackendError::Unavailable(UNREACHABLE)
        })?;
        let mut invocation = script.prepare_invoke();
        for arg in &self.args {
            invocation.arg(arg.as_slice());
        }
        match invocation.invoke_async(&mut connection).await {
            Ok(value) => Ok(value),
            Err(e) => Err(classify(conn, &e).await),
        }
    }
}

/// The refusal while Redis cannot be reached.
pub const UNREACHABLE: &str = "Redis is unreachable; the broker reconnects by itself";

/// A failed request as the service hears it: see the module doc.
async fn classify(conn: &Connection, e: &RedisError) -> BackendError {
    let transient = match e.kind() {
        ErrorKind::Io | ErrorKind::AuthenticationFailed => Some(UNREACHABLE),
        ErrorKind::Server(ServerErrorKind::BusyLoading) => {
            Some("Redis is loading its data; the broker retries by itself")
        }
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown) => {
            Some("Redis is read-only now (a replica, or a failover under way)")
        }
        ErrorKind::Server(ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown) => {
            Some("Redis asked to try again")
        }
        _ if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => Some(UNREACHABLE),
        _ => None,
    };
    if let Some(message) = transient {
        debug!(error = %e, "Redis unavailable");
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            conn.reset().await;
        }
        return BackendError::Unavailable(message);
    }
    if e.code() == Some("OOM") {
        debug!(error = %e, "Redis is at its maxmemory");
        return BackendError::StoreFull(
            "Redis is at its maxmemory and refuses writes; jobs finishing free room",
        );
    }
    error!(error = %e, "Redis error");
    BackendError::Internal
}

/// Reading what a script answered. Anything of another shape is a defect
/// of this backend: logged, and answered [`BackendError::Internal`].
pub mod reply {
    use super::{BackendError, Value, error};

    /// A reply that is not what the script returns.
    pub fn malformed(what: &str) -> BackendError {
        error!(what, "a Redis script answered something else");
        BackendError::Internal
    }

    /// The items of an array.
    pub fn items(v: &Value) -> Result<&[Value], BackendError> {
        match v {
            Value::Array(items) => Ok(items),
            _ => Err(malformed("an array")),
        }
    }

    /// A string (nil for a missing field).
    pub fn text(v: &Value) -> Result<Option<String>, BackendError> {
        match v {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => String::from_utf8(bytes.clone())
                .map(Some)
                .map_err(|_| malformed("UTF-8 text")),
            Value::SimpleString(s) => Ok(Some(s.clone())),
            Value::Int(n) => Ok(Some(n.to_string())),
            Value::Okay => Ok(Some("OK".to_owned())),
            _ => Err(malformed("a string")),
        }
    }

    /// A string that must be there.
    pub fn string(v: &Value) -> Result<String, BackendError> {
        text(v)?.ok_or_else(|| malformed("a string"))
    }

    /// Bytes (a payload).
    pub fn bytes(v: &Value) -> Result<Vec<u8>, BackendError> {
        match v {
            Value::BulkString(bytes) => Ok(bytes.clone()),
            Value::Nil => Ok(Vec::new()),
            _ => Err(malformed("bytes")),
        }
    }

    /// A number, from an integer reply or its text; `None` for nil or ''.
    pub fn number<T: std::str::FromStr>(v: &Value) -> Result<Option<T>, BackendError> {
        match text(v)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| malformed("a number")),
        }
    }

    /// A number that must be there.
    pub fn int<T: std::str::FromStr>(v: &Value) -> Result<T, BackendError> {
        number(v)?.ok_or_else(|| malformed("a number"))
    }

    /// Item `i` of `items`.
    pub fn at(items: &[Value], i: usize) -> Result<&Value, BackendError> {
        items.get(i).ok_or_else(|| malformed("more items"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_a_script_reads_is_written_by_the_library_or_a_script() {
        // Every file of lua/, so that a script added later is looked at.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/redis/lua");
        let mut lua = String::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            lua.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap());
        }
        assert!(lua.contains("-- Claim:"), "lua/ was read");
        for field in FIELDS.iter().chain(&LOADED) {
            assert!(
                lua.contains(&format!("'{field}'")) || lua.contains(&format!("j.{field}")),
                "{field} is written nowhere"
            );
        }
        assert!(prelude().starts_with("local FIELDS = {'id', 'q',"));
    }
}
