//! Authenticated job entries: an HMAC-SHA256 over everything a worker acts
//! on, with a secret shared by the callers and workers of a queue.
//!
//! Without a secret, anyone who can write the job stream can make a worker
//! evict objects of any store (a forged entry naming them as inputs) or
//! overwrite one (a job whose result key is another store's object). With
//! one, a worker checks each entry's `mac` field before it does anything
//! with the entry: an entry without a valid one is dropped, with a warning,
//! and a failure goes back to the caller it names, so a caller whose secret
//! differs from the workers' gets an error instead of waiting for ever.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

use super::redis_io::Entry;

/// The environment variable holding the secret of a worker started by
/// [`worker::init`](crate::worker::init) (prefer [`SECRET_FILE_ENV`]: the
/// environment of a process is visible to its user's other processes).
pub const SECRET_ENV: &str = "PROXYSTORE_CLUSTER_SECRET";

/// The environment variable naming a file that holds the secret (a
/// trailing line break is ignored).
pub const SECRET_FILE_ENV: &str = "PROXYSTORE_CLUSTER_SECRET_FILE";

/// The entry field that carries the MAC.
pub(super) const MAC_FIELD: &str = "mac";

/// Separates this use of the secret from any other.
const CONTEXT: &[u8] = b"proxystore cluster job v1";

/// A queue's shared secret; never shown.
#[derive(Clone)]
pub(super) struct JobKey(std::sync::Arc<[u8]>);

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobKey(<hidden>)")
    }
}

/// The fields of a job entry that a worker acts on, in the order they are
/// authenticated.
pub(super) struct Signed<'a> {
    pub(super) job: &'a [u8],
    pub(super) caller: &'a [u8],
    pub(super) id: &'a [u8],
    pub(super) attempts: &'a [u8],
    pub(super) ttl: &'a [u8],
    pub(super) evict: &'a [u8],
    pub(super) task: &'a [u8],
}

impl JobKey {
    /// A key of `secret`; an empty one is refused.
    pub(super) fn new(secret: &[u8]) -> Result<JobKey> {
        if secret.is_empty() {
            return Err(Error::InvalidConfig {
                kind: "cluster queue".into(),
                reason: "the queue's secret is empty: give callers and workers the same \
                         non-empty secret, or none"
                    .into(),
            });
        }
        Ok(JobKey(secret.into()))
    }

    fn mac(&self, queue: &str, fields: &Signed<'_>) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(CONTEXT);
        // Each field with its length first, so that no two different
        // entries authenticate the same bytes.
        for field in [
            queue.as_bytes(),
            fields.job,
            fields.caller,
            fields.id,
            fields.attempts,
            fields.ttl,
            fields.evict,
            fields.task,
        ] {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field);
        }
        mac
    }

    /// The MAC of these fields of a job entry of `queue`.
    pub(super) fn sign(&self, queue: &str, fields: &Signed<'_>) -> Vec<u8> {
        self.mac(queue, fields).finalize().into_bytes().to_vec()
    }

    /// Whether `entry` of `queue` carries a valid MAC (compared in
    /// constant time).
    pub(super) fn verify(&self, queue: &str, entry: &Entry) -> bool {
        let Some(tag) = entry.field(MAC_FIELD) else {
            return false;
        };
        let field = |name| entry.field(name).unwrap_or_default();
        let fields = Signed {
            job: field("job"),
            caller: field("caller"),
            id: field("id"),
            attempts: field("attempts"),
            ttl: field("ttl"),
            evict: field("evict"),
            task: field("task"),
        };
        self.mac(queue, &fields).verify_slice(tag).is_ok()
    }
}

/// The secret from [`SECRET_FILE_ENV`] or [`SECRET_ENV`], if either is set.
/// Bytes of the tag that [`JobKey::seal`] appends.
pub(super) const TAG_LEN: usize = 32;

impl JobKey {
    fn blob_mac(&self, queue: &str, label: &[u8], caller: &str, data: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(CONTEXT);
        for field in [label, queue.as_bytes(), caller.as_bytes(), data] {
            mac.update(&(field.len() as u64).to_le_bytes());
            mac.update(field);
        }
        mac
    }

    /// `data` followed by its tag, as something of `caller`'s that
    /// workers act on (`label` says what: a reply, an input record).
    pub(super) fn seal(
        &self,
        queue: &str,
        label: &[u8],
        caller: &str,
        mut data: Vec<u8>,
    ) -> Vec<u8> {
        let tag = self
            .blob_mac(queue, label, caller, &data)
            .finalize()
            .into_bytes();
        data.extend_from_slice(&tag);
        data
    }

    /// The data of a [`seal`](JobKey::seal)ed blob, if its tag is right.
    pub(super) fn open<'a>(
        &self,
        queue: &str,
        label: &[u8],
        caller: &str,
        blob: &'a [u8],
    ) -> Option<&'a [u8]> {
        let split = blob.len().checked_sub(TAG_LEN)?;
        let (data, tag) = blob.split_at(split);
        self.blob_mac(queue, label, caller, data)
            .verify_slice(tag)
            .ok()
            .map(|()| data)
    }
}

pub(super) fn secret_from_env() -> Result<Option<JobKey>> {
    let invalid = |reason: String| Error::InvalidConfig {
        kind: "cluster queue".into(),
        reason,
    };
    if let Some(path) = std::env::var_os(SECRET_FILE_ENV) {
        let bytes = std::fs::read(&path).map_err(|e| {
            invalid(format!(
                "cannot read the secret file {SECRET_FILE_ENV}={}: {e}",
                std::path::Path::new(&path).display()
            ))
        })?;
        let secret = bytes
            .strip_suffix(b"\n")
            .map(|b| b.strip_suffix(b"\r").unwrap_or(b))
            .unwrap_or(&bytes);
        return JobKey::new(secret).map(Some);
    }
    match std::env::var_os(SECRET_ENV) {
        Some(secret) => JobKey::new(secret.as_encoded_bytes()).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(evict: &'a [u8], caller: &'a [u8]) -> Signed<'a> {
        Signed {
            job: b"job bytes",
            caller,
            id: b"7",
            attempts: b"3",
            ttl: b"1000",
            evict,
            task: b"17",
        }
    }

    #[test]
    fn every_field_is_authenticated() {
        let key = JobKey::new(b"secret").unwrap();
        let tag = key.sign("q", &fields(b"", b"ab"));
        assert_eq!(tag.len(), 32);
        assert_eq!(tag, key.sign("q", &fields(b"", b"ab")));
        // Moving bytes from one field to the next changes the MAC.
        assert_ne!(tag, key.sign("q", &fields(b"b", b"a")));
        assert_ne!(tag, key.sign("q", &fields(b"", b"ac")));
        let other = JobKey::new(b"another secret").unwrap();
        assert_ne!(tag, other.sign("q", &fields(b"", b"ab")));
        assert_ne!(tag, key.sign("another-queue", &fields(b"", b"ab")));
        assert!(JobKey::new(b"").is_err());
        assert_eq!(format!("{key:?}"), "JobKey(<hidden>)");
    }
}
