//! The queue's keys in Redis, its settings, the scripts that change
//! several keys at once, and the format of replies.

use std::time::Duration;

use super::auth::{JobKey, Signed};
use super::redis_io::Entry;
use crate::error::{Error, Result};

/// The consumer group every worker of a queue reads in.
pub(super) const GROUP: &str = "workers";

/// How many replies a caller takes per round trip.
pub(super) const REPLY_BATCH: usize = 1024;

/// What [`Keys::seal`] labels a reply with.
pub(super) const REPLY_LABEL: &[u8] = b"reply";
/// What [`Keys::seal`] labels an input record with.
pub(super) const INPUTS_LABEL: &[u8] = b"inputs";

/// The keys of one queue.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    queue: String,
    /// The queue's shared secret, if jobs are authenticated.
    secret: Option<JobKey>,
}

impl Keys {
    pub(crate) fn new(queue: &str) -> Result<Keys> {
        if queue.is_empty()
            || queue.len() > 200
            || !queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::InvalidConfig {
                kind: "cluster queue".into(),
                reason: format!(
                    "queue name {queue:?}: use 1 to 200 ASCII letters, digits, '-', '_' or '.'"
                ),
            });
        }
        Ok(Keys {
            prefix: format!("proxystore:queue:{queue}"),
            queue: queue.to_string(),
            secret: None,
        })
    }

    /// Authenticates jobs with `secret` (see [`auth`](super::auth)).
    pub(super) fn set_secret(&mut self, secret: Option<JobKey>) {
        self.secret = secret;
    }

    /// The MAC of a job entry's fields, if jobs are authenticated.
    pub(super) fn sign(&self, fields: &Signed<'_>) -> Option<Vec<u8>> {
        let secret = self.secret.as_ref()?;
        Some(secret.sign(&self.queue, fields))
    }

    /// Whether a worker may act on `entry`: always without a secret,
    /// otherwise only if its MAC is valid.
    pub(super) fn authentic(&self, entry: &Entry) -> bool {
        self.secret
            .as_ref()
            .is_none_or(|secret| secret.verify(&self.queue, entry))
    }

    /// `data` (a reply, an input record) of `caller` as it is written in
    /// Redis: with a tag when the queue has a secret, so that nobody
    /// without it can make workers act on forged data (evict what a forged
    /// record or reply names), nor a caller take a forged reply.
    pub(super) fn seal(&self, label: &[u8], caller: &str, data: Vec<u8>) -> Vec<u8> {
        match &self.secret {
            Some(secret) => secret.seal(&self.queue, label, caller, data),
            None => data,
        }
    }

    /// The data of a blob written by [`seal`](Keys::seal): `None` if the
    /// queue has a secret and the blob's tag is wrong.
    pub(super) fn open<'a>(&self, label: &[u8], caller: &str, blob: &'a [u8]) -> Option<&'a [u8]> {
        match &self.secret {
            Some(secret) => secret.open(&self.queue, label, caller, blob),
            None => Some(blob),
        }
    }

    /// The queue's name.
    pub(crate) fn queue(&self) -> &str {
        &self.queue
    }

    /// The prefix of every heartbeat key (a member's name follows).
    pub(crate) fn alive_prefix(&self) -> String {
        format!("{}:alive:", self.prefix)
    }

    /// The stream of jobs.
    pub(crate) fn jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    /// The stream of jobs given up after their last attempt.
    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// A caller's list of replies.
    pub(crate) fn reply(&self, caller: &str) -> String {
        format!("{}:reply:{caller}", self.prefix)
    }

    /// A caller's record of the inputs of its unanswered jobs (a hash by
    /// job id; see [`input_record`]), which a worker evicts if the caller
    /// dies.
    pub(crate) fn inputs(&self, caller: &str) -> String {
        format!("{}:inputs:{caller}", self.prefix)
    }

    /// The set of callers that may have replies waiting.
    pub(crate) fn callers(&self) -> String {
        format!("{}:callers", self.prefix)
    }

    /// A process's heartbeat key (workers and callers).
    pub(crate) fn alive(&self, member: &str) -> String {
        format!("{}:alive:{member}", self.prefix)
    }

    /// The mark a caller sets to ask the worker running job `entry` to stop.
    pub(crate) fn interrupt(&self, entry: &str) -> String {
        format!("{}:interrupt:{entry}", self.prefix)
    }
}

/// Timings and limits shared by callers and workers of a queue.
///
/// The defaults find a dead worker within about 3 s and suit tasks of any
/// length (a running task keeps its job leased). Callers and workers of one
/// queue should use the same values.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often a process renews its heartbeat key and the lease of the
    /// job it runs (default 1 s).
    pub heartbeat: Duration,
    /// How long a heartbeat key lives without renewal: a process silent
    /// that long is taken for dead (default 3 s).
    pub heartbeat_ttl: Duration,
    /// How long a delivered job may go without its lease being renewed
    /// before a reaper may take it from a consumer whose heartbeat expired
    /// (default 3 s).
    pub lease: Duration,
    /// How often reapers look for jobs of dead consumers (default 1 s).
    pub reap_every: Duration,
    /// How many times a job is delivered before it is given up and moved
    /// to the dead-letter stream (default 3). Set by the caller, carried by
    /// each job.
    pub max_attempts: u32,
    /// How long replies wait for a caller that stopped reading them, and
    /// jobs for a caller that died, before they expire (default 1 hour).
    pub reply_ttl: Duration,
    /// How long entries stay in the dead-letter stream (default 1 day).
    pub dead_letter_ttl: Duration,
    /// How long a caller's heartbeat lives without renewal (default 30 s).
    /// Workers drop the jobs of a caller silent that long, and evict their
    /// objects: keep it well above any stall the caller may have.
    pub caller_ttl: Duration,
    /// How long a caller with tasks waiting goes without any live worker
    /// on its queue before it warns (a `tracing` warning, target
    /// `proxystore::executor`, repeated at most this often; default 30 s).
    pub no_worker_warning: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            heartbeat: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(3),
            lease: Duration::from_secs(3),
            reap_every: Duration::from_secs(1),
            max_attempts: 3,
            reply_ttl: Duration::from_secs(3600),
            dead_letter_ttl: Duration::from_secs(24 * 3600),
            caller_ttl: Duration::from_secs(30),
            no_worker_warning: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// The longest duration a setting may have: Redis refuses an expiry
    /// whose end does not fit in its clock (2^63 ms), so a longer one could
    /// never be set on a key. About 100 years.
    pub const MAX_DURATION: Duration = Duration::from_millis(MAX_TTL_MS);

    pub(crate) fn check(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InvalidConfig {
                kind: "cluster queue".into(),
                reason,
            })
        };
        for (name, d) in [
            ("heartbeat", self.heartbeat),
            ("heartbeat_ttl", self.heartbeat_ttl),
            ("lease", self.lease),
            ("reap_every", self.reap_every),
            ("reply_ttl", self.reply_ttl),
            ("dead_letter_ttl", self.dead_letter_ttl),
            ("caller_ttl", self.caller_ttl),
            ("no_worker_warning", self.no_worker_warning),
        ] {
            if d > Settings::MAX_DURATION {
                return bad(format!(
                    "{name} ({d:?}) is longer than Redis can keep a key: use at most \
                     Settings::MAX_DURATION ({:?})",
                    Settings::MAX_DURATION
                ));
            }
        }
        if self.heartbeat.is_zero() || self.heartbeat_ttl <= self.heartbeat {
            return bad(format!(
                "heartbeat_ttl ({:?}) must be longer than the heartbeat interval ({:?})",
                self.heartbeat_ttl, self.heartbeat
            ));
        }
        if self.lease <= self.heartbeat {
            return bad(format!(
                "the lease ({:?}) must be longer than the heartbeat interval ({:?}) that renews it",
                self.lease, self.heartbeat
            ));
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        if self.caller_ttl <= self.heartbeat {
            return bad(format!(
                "caller_ttl ({:?}) must be longer than the heartbeat interval ({:?})",
                self.caller_ttl, self.heartbeat
            ));
        }
        if self.reap_every.is_zero()
            || self.reply_ttl.is_zero()
            || self.dead_letter_ttl.is_zero()
            || self.no_worker_warning.is_zero()
        {
            return bad(
                "reap_every, reply_ttl, dead_letter_ttl and no_worker_warning must not be zero"
                    .into(),
            );
        }
        Ok(())
    }

    /// How long the queue's stream lives once nobody renews it, while it
    /// holds no job: twice a heartbeat's lifetime.
    pub(crate) fn idle_stream_ttl(&self) -> Duration {
        self.heartbeat_ttl
            .saturating_mul(2)
            .min(Settings::MAX_DURATION)
    }

    /// How long it lives once nobody renews it, while it holds jobs: as
    /// long as their caller may stall, twice over.
    pub(crate) fn busy_stream_ttl(&self) -> Duration {
        self.caller_ttl
            .max(self.heartbeat_ttl)
            .saturating_mul(2)
            .min(Settings::MAX_DURATION)
    }
}

/// What a caller records of a job's inputs before the job is queued: the
/// job without its arguments (its store and result key) and the input
/// keys: `stub length (4 bytes, little endian), stub, 16-byte keys`.
pub(crate) fn input_record(job: &crate::task::Job) -> Vec<u8> {
    let mut stub = Vec::new();
    job.write_prefix(&mut stub, 0);
    let mut out = Vec::with_capacity(4 + stub.len() + 16 * job.created.len());
    out.extend_from_slice(&(stub.len() as u32).to_le_bytes());
    out.extend_from_slice(&stub);
    for key in &job.created {
        out.extend_from_slice(key.as_uuid().as_bytes());
    }
    out
}

/// Evicts the inputs an [`input_record`] names from their store; a record
/// that does not parse (or whose store cannot be built) is skipped.
pub(crate) fn evict_recorded(record: &[u8]) {
    let Some((len, rest)) = record.split_first_chunk::<4>() else {
        return;
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > rest.len() {
        return;
    }
    let (stub, keys) = rest.split_at(len);
    let Ok(store) = crate::task::ReceivedJob::parse(stub).and_then(|j| j.store()) else {
        return;
    };
    for key in keys
        .chunks_exact(16)
        .filter_map(|b| uuid::Uuid::from_slice(b).ok())
        .filter_map(|u| crate::key::Key::parse(&u.hyphenated().to_string()).ok())
    {
        if let Err(e) = store.evict(&key) {
            tracing::debug!(%key, error = %e, "cluster: could not evict an input of a dead caller");
        }
    }
}

/// [`Settings::MAX_DURATION`] in ms: also the bound of every expiry read
/// from a job entry.
pub(crate) const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Whether a server error is one that goes away by itself (memory freed, a
/// failover done, a script loaded, a replica caught up), so that the
/// command is worth retrying; any other refusal (a malformed argument, a
/// key of the wrong type) would fail again the same way.
pub(crate) fn is_transient(e: &redis::RedisError) -> bool {
    matches!(
        e.code(),
        Some(
            "OOM"
                | "READONLY"
                | "LOADING"
                | "BUSY"
                | "MASTERDOWN"
                | "TRYAGAIN"
                | "CLUSTERDOWN"
                | "NOREPLICAS"
                | "NOSCRIPT"
                | "NOGROUP"
        )
    )
}

pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

// The scripts that run on the queue's keys.
pub(super) use super::scripts::{FINISH, GIVE_UP, HAND_BACK, KEEP, LEAVE, NOTIFY, RENEW, REVOKE};

/// What a worker sends back for one job.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The task's encoded result.
    Done(Vec<u8>),
    /// The task failed (error, panic, undecodable arguments).
    Failed(String),
    /// The worker has no task of that name.
    UnknownTask { registered: String },
    /// The job was delivered `attempts` times without finishing.
    GaveUp { attempts: u64, reason: String },
    /// Not an answer: the job runs again, on attempt `attempt`, because
    /// the worker that had it died or stopped.
    Rerun { attempt: u64 },
    /// The caller wakes its own reader to stop it.
    Stop,
}

const DONE: u8 = 0;
const FAILED: u8 = 1;
const UNKNOWN: u8 = 2;
const GAVE_UP: u8 = 3;
const RERUN: u8 = 4;
/// `DONE` and `FAILED` with the host of the worker that ran the job.
const DONE_ON: u8 = 5;
const FAILED_ON: u8 = 6;
const STOP: u8 = 255;

impl Reply {
    /// `kind, job id (8 bytes, little endian), body`.
    pub(crate) fn encode(&self, id: u64) -> Vec<u8> {
        self.encode_on(id, None)
    }

    /// [`encode`](Reply::encode), naming the worker's host in an answer:
    /// `kind, job id, host length (1 byte), host, body`.
    pub(crate) fn encode_on(&self, id: u64, host: Option<&str>) -> Vec<u8> {
        let host = host.map(|h| &h.as_bytes()[..h.len().min(255)]);
        let (kind, body): (u8, &[u8]) = match self {
            Reply::Done(bytes) => (DONE, bytes),
            Reply::Failed(message) => (FAILED, message.as_bytes()),
            Reply::UnknownTask { registered } => (UNKNOWN, registered.as_bytes()),
            Reply::GaveUp { .. } => (GAVE_UP, &[]),
            Reply::Rerun { .. } => (RERUN, &[]),
            Reply::Stop => (STOP, &[]),
        };
        let mut out = Vec::with_capacity(9 + body.len() + 16 + host.map_or(0, |h| h.len() + 1));
        match (kind, host) {
            (DONE | FAILED, Some(host)) => {
                out.push(if kind == DONE { DONE_ON } else { FAILED_ON });
                out.extend_from_slice(&id.to_le_bytes());
                out.push(host.len() as u8);
                out.extend_from_slice(host);
            }
            _ => {
                out.push(kind);
                out.extend_from_slice(&id.to_le_bytes());
            }
        }
        if let Reply::GaveUp { attempts, reason } = self {
            out.extend_from_slice(&attempts.to_le_bytes());
            out.extend_from_slice(reason.as_bytes());
        } else if let Reply::Rerun { attempt } = self {
            out.extend_from_slice(&attempt.to_le_bytes());
        } else {
            out.extend_from_slice(body);
        }
        out
    }

    /// Reads a reply; `None` if it is malformed.
    pub(crate) fn decode(bytes: Vec<u8>) -> Option<(u64, Reply)> {
        Reply::decode_on(bytes).map(|(id, reply, _)| (id, reply))
    }

    /// Reads a reply and the host it names, if it names one.
    pub(crate) fn decode_on(mut bytes: Vec<u8>) -> Option<(u64, Reply, Option<String>)> {
        if bytes.len() < 9 {
            return None;
        }
        let mut kind = bytes[0];
        let id = u64::from_le_bytes(bytes[1..9].try_into().ok()?);
        let mut host = None;
        if kind == DONE_ON || kind == FAILED_ON {
            let len = usize::from(*bytes.get(9)?);
            let name = bytes.get(10..10 + len)?;
            host = Some(String::from_utf8_lossy(name).into_owned());
            // The rest is read as the plain answer's.
            bytes.drain(9..10 + len);
            kind = if kind == DONE_ON { DONE } else { FAILED };
        }
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let reply = match kind {
            DONE => {
                bytes.drain(..9);
                Reply::Done(bytes)
            }
            FAILED => Reply::Failed(text(&bytes[9..])),
            UNKNOWN => Reply::UnknownTask {
                registered: text(&bytes[9..]),
            },
            GAVE_UP => {
                let attempts = u64::from_le_bytes(bytes.get(9..17)?.try_into().ok()?);
                Reply::GaveUp {
                    attempts,
                    reason: text(&bytes[17..]),
                }
            }
            RERUN => Reply::Rerun {
                attempt: u64::from_le_bytes(bytes.get(9..17)?.try_into().ok()?),
            },
            STOP => Reply::Stop,
            _ => return None,
        };
        Some((id, reply, host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_garbage_is_refused() {
        for reply in [
            Reply::Done(vec![1, 2, 3]),
            Reply::Failed("boom".into()),
            Reply::UnknownTask {
                registered: "a, b".into(),
            },
            Reply::GaveUp {
                attempts: 3,
                reason: "died".into(),
            },
            Reply::Rerun { attempt: 2 },
            Reply::Stop,
        ] {
            let (id, back) = Reply::decode(reply.encode(42)).unwrap();
            assert_eq!(id, 42);
            assert_eq!(format!("{back:?}"), format!("{reply:?}"));
        }
        for reply in [Reply::Done(vec![1, 2, 3]), Reply::Failed("boom".into())] {
            let (id, back, host) = Reply::decode_on(reply.encode_on(7, Some("node-3"))).unwrap();
            assert_eq!((id, host.as_deref()), (7, Some("node-3")));
            assert_eq!(format!("{back:?}"), format!("{reply:?}"));
        }
        let long = "h".repeat(300);
        let (_, _, host) = Reply::decode_on(Reply::Done(vec![]).encode_on(1, Some(&long))).unwrap();
        assert_eq!(host.map(|h| h.len()), Some(255));
        // A host length past the end.
        assert!(Reply::decode_on([&[DONE_ON][..], &[0; 8], &[40, b'a']].concat()).is_none());
        assert!(Reply::decode(vec![0; 8]).is_none());
        assert!(Reply::decode(vec![7; 20]).is_none());
        assert!(Reply::decode([&[GAVE_UP][..], &[0; 10]].concat()).is_none());
    }

    #[test]
    fn queue_names_are_checked() {
        assert!(Keys::new("jobs-1.a_b").is_ok());
        for bad in ["", "a b", "a:b", "a*", "ä"] {
            assert!(Keys::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Keys::new("q").unwrap().jobs(), "proxystore:queue:q:jobs");
    }
}
