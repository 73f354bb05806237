//! Lifetimes: objects evicted together, when a scope ends, a lease runs
//! out or the process exits, as ProxyStore's `proxystore.store.lifetimes`.
//!
//! Associate an object with a lifetime when storing it
//! ([`Store::put_with_lifetime`], [`Store::proxy_with_lifetime`]) or later
//! ([`Lifetime::add_key`], [`add_proxy`](trait.Lifetime.html#method.add_proxy)):
//!
//! - [`ContextLifetime`]: evicted when the lifetime is closed or dropped
//!   (the end of its scope);
//! - [`LeaseLifetime`]: evicted when the lease runs out, unless
//!   [`extend`](LeaseLifetime::extend)ed; where the connector can expire
//!   keys itself (Redis), the lease also asks it to, so the objects go even
//!   if the program dies;
//! - [`StaticLifetime`]: evicted when the process exits normally (returning
//!   from `main` or `std::process::exit`).
//!
//! ```
//! use std::time::Duration;
//! use proxystore::connectors::LocalConnector;
//! use proxystore::lifetime::{ContextLifetime, LeaseLifetime, Lifetime};
//! use proxystore::Store;
//!
//! let store = Store::new("lifetime-doc", LocalConnector::new())?;
//! let kept = {
//!     let scope = ContextLifetime::new();
//!     let a = store.put_with_lifetime(&vec![1u8; 1024], &scope)?;
//!     let p = store.proxy_with_lifetime(String::from("scoped"), &scope)?;
//!     assert_eq!(*p, "scoped");
//!     a
//! }; // the scope ends: both objects are evicted
//! assert!(!store.exists(&kept)?);
//!
//! let lease = LeaseLifetime::new(Duration::from_millis(50));
//! let key = store.put_with_lifetime(&42u64, &lease)?;
//! lease.extend(Duration::from_millis(50));
//! std::thread::sleep(Duration::from_millis(300));
//! assert!(lease.done() && !store.exists(&key)?);
//! # Ok::<(), proxystore::Error>(())
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::key::Key;
use crate::proxy::Proxy;
use crate::store::Store;

/// Something objects live as long as: see the [module](self).
pub trait Lifetime: Send + Sync {
    /// Associates the object `key` of `store` with this lifetime: it is
    /// evicted when the lifetime ends. [`Error::LifetimeEnded`] if it has
    /// ended already (the object is then left alone).
    fn add_key(&self, store: &Store, key: Key) -> Result<()>;

    /// Ends the lifetime now: its objects are evicted.
    fn close(&self);

    /// Whether the lifetime has ended.
    fn done(&self) -> bool;
}

impl dyn Lifetime + '_ {
    /// Associates a proxy's object with this lifetime.
    pub fn add_proxy<T: crate::Storable>(&self, proxy: &Proxy<T>) -> Result<()> {
        let store = Proxy::factory(proxy).store()?;
        self.add_key(&store, Proxy::key(proxy))
    }
}

/// The objects of a lifetime.
#[derive(Default)]
struct Objects {
    keys: Mutex<Vec<(Store, Key)>>,
    ended: AtomicBool,
}

impl Objects {
    fn lock(&self) -> MutexGuard<'_, Vec<(Store, Key)>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, store: &Store, key: Key, kind: &'static str) -> Result<()> {
        let mut keys = self.lock();
        if self.ended.load(Ordering::Acquire) {
            return Err(Error::LifetimeEnded { lifetime: kind });
        }
        keys.push((store.clone(), key));
        Ok(())
    }

    /// Ends the lifetime and evicts its objects (once), remembering why
    /// (see [`evictions`]).
    fn end(&self, how: Ending) {
        let keys = {
            let mut keys = self.lock();
            if self.ended.swap(true, Ordering::AcqRel) {
                return;
            }
            std::mem::take(&mut *keys)
        };
        for (store, key) in keys {
            // Remembered first: a proxy that misses the object from the
            // moment it is gone can tell why.
            evictions::record(store.name(), key, how);
            if let Err(e) = store.evict(&key) {
                evictions::forget(&key);
                tracing::debug!(%key, store = %store.name(), error = %e, "lifetime: could not evict");
            }
        }
    }

    fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }
}

/// How a lifetime ended, for the message of an object it evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Context,
    LeaseRanOut,
    LeaseClosed,
    Static,
}

/// The objects this process evicted because their lifetime ended, so that
/// reading one of them later ([`Error::MissingObject`]) says so rather
/// than guess. Only the last [`REMEMBERED`](evictions::REMEMBERED) are
/// kept; an object stored again under its key is forgotten (its next
/// absence may have another cause).
pub(crate) mod evictions {
    use std::num::NonZeroUsize;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, MutexGuard};

    use lru::LruCache;

    use super::Ending;
    use crate::key::Key;

    /// How many evictions are remembered at most.
    pub(crate) const REMEMBERED: usize = 4096;

    /// Whether anything was ever recorded: until then, storing an object
    /// costs no lock.
    static ANY: AtomicBool = AtomicBool::new(false);

    type Evictions = LruCache<Key, (Box<str>, Ending)>;

    fn evictions() -> MutexGuard<'static, Option<Evictions>> {
        static EVICTIONS: Mutex<Option<Evictions>> = Mutex::new(None);
        EVICTIONS.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `key` of `store` is being evicted because its lifetime ended `how`.
    pub(crate) fn record(store: &str, key: Key, how: Ending) {
        ANY.store(true, Ordering::Release);
        evictions()
            .get_or_insert_with(|| LruCache::new(NonZeroUsize::new(REMEMBERED).expect("not zero")))
            .put(key, (store.into(), how));
    }

    /// `key` holds an object again (or its eviction failed): forget why it
    /// was last evicted.
    pub(crate) fn forget(key: &Key) {
        if ANY.load(Ordering::Acquire) {
            if let Some(evictions) = evictions().as_mut() {
                evictions.pop(key);
            }
        }
    }

    /// How the lifetime that evicted `key` of `store` in this process
    /// ended, if one did.
    pub(crate) fn lookup(store: &str, key: &Key) -> Option<Ending> {
        if !ANY.load(Ordering::Acquire) {
            return None;
        }
        let mut evictions = evictions();
        match evictions.as_mut()?.peek(key) {
            Some((name, how)) if **name == *store => Some(*how),
            _ => None,
        }
    }
}

/// Why the object `key` of `store` is missing, for
/// [`Error::MissingObject`]: the lifetime that evicted it in this process
/// if one did, otherwise the likely causes.
pub(crate) fn why_missing(store: &str, key: &Key) -> &'static str {
    match evictions::lookup(store, key) {
        Some(Ending::LeaseRanOut) => {
            "it belonged to a lease (LeaseLifetime) that ran out, and this process evicted it \
             then; extend the lease (LeaseLifetime::extend), or give it a longer one, while \
             proxies of the object are in use"
        }
        Some(Ending::LeaseClosed) => {
            "it belonged to a lease (LeaseLifetime) that was closed, and this process evicted it \
             then"
        }
        Some(Ending::Context) => {
            "it belonged to a ContextLifetime that ended (it was closed or dropped), and this \
             process evicted it then"
        }
        Some(Ending::Static) => {
            "it belonged to the StaticLifetime, which ended (it was closed, or the process is \
             exiting), and this process evicted it then"
        }
        None => {
            "it was probably evicted (its owner was dropped, an executor task ended, or a \
             lifetime it belonged to ended: a ContextLifetime closed or a lease ran out) while \
             proxies of it still existed, or the store was closed"
        }
    }
}

/// Objects evicted when the lifetime is closed or dropped: a scope.
#[derive(Default)]
pub struct ContextLifetime {
    objects: Objects,
}

impl ContextLifetime {
    /// A new, open lifetime.
    pub fn new() -> Self {
        ContextLifetime::default()
    }
}

impl Lifetime for ContextLifetime {
    fn add_key(&self, store: &Store, key: Key) -> Result<()> {
        self.objects.add(store, key, "context")
    }

    fn close(&self) {
        self.objects.end(Ending::Context);
    }

    fn done(&self) -> bool {
        self.objects.ended()
    }
}

impl Drop for ContextLifetime {
    fn drop(&mut self) {
        self.objects.end(Ending::Context);
    }
}

impl fmt::Debug for ContextLifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextLifetime")
            .field("objects", &self.objects.lock().len())
            .field("done", &self.done())
            .finish()
    }
}

/// Objects evicted when the lease runs out, unless it is extended.
///
/// A thread of its own waits for the end of the lease; dropping the
/// `LeaseLifetime` does not end the lease early (use
/// [`close`](Lifetime::close)). Where the connector can expire keys itself
/// ([`Connector::expire`](crate::connectors::Connector::expire), Redis),
/// each object is also given the lease's expiry there.
pub struct LeaseLifetime {
    lease: Arc<Lease>,
}

struct Lease {
    objects: Objects,
    expiry: Mutex<Instant>,
    changed: Condvar,
}

impl Lease {
    fn expiry(&self) -> MutexGuard<'_, Instant> {
        self.expiry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the end of the lease, then ends it.
    fn run(&self) {
        let mut expiry = self.expiry();
        loop {
            if self.objects.ended() {
                return;
            }
            let now = Instant::now();
            if now >= *expiry {
                break;
            }
            let left = *expiry - now;
            expiry = self
                .changed
                .wait_timeout(expiry, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(expiry);
        self.objects.end(Ending::LeaseRanOut);
    }

    /// Gives `keys` the lease's remaining time in their connectors, if they
    /// can expire keys. Under the expiry's lock, so that an `extend` racing
    /// with an `add_key` never leaves a key with the older, shorter time.
    fn expire_in_connector(&self, keys: &[(Store, Key)]) {
        let expiry = self.expiry();
        let left = expiry.saturating_duration_since(Instant::now());
        for (store, key) in keys {
            if let Err(e) = store
                .connector()
                .expire(key, left.max(Duration::from_millis(1)))
            {
                tracing::debug!(%key, error = %e, "lease: the connector could not expire the object");
            }
        }
    }
}

/// `start + duration`, or a century away when that does not fit.
fn deadline_after(start: Instant, duration: Duration) -> Instant {
    start
        .checked_add(duration)
        .or_else(|| start.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(start)
}

impl LeaseLifetime {
    /// A lease that ends `duration` from now.
    pub fn new(duration: Duration) -> Self {
        let lease = Arc::new(Lease {
            objects: Objects::default(),
            expiry: Mutex::new(deadline_after(Instant::now(), duration)),
            changed: Condvar::new(),
        });
        let running = lease.clone();
        let spawned = std::thread::Builder::new()
            .name("proxystore-lease".into())
            .spawn(move || running.run());
        if let Err(e) = spawned {
            // Without its thread the lease cannot end on time: end it now
            // rather than never (it holds nothing yet).
            tracing::warn!(error = %e, "lease: no thread to end it; ended at once");
            lease.objects.end(Ending::LeaseRanOut);
        }
        LeaseLifetime { lease }
    }

    /// Extends the lease by `by` (from its current end).
    pub fn extend(&self, by: Duration) {
        {
            let mut expiry = self.lease.expiry();
            *expiry = deadline_after(*expiry, by);
        }
        self.lease.changed.notify_all();
        let keys = self.lease.objects.lock().clone();
        self.lease.expire_in_connector(&keys);
    }

    /// How long until the lease ends (zero once it has).
    pub fn remaining(&self) -> Duration {
        if self.done() {
            return Duration::ZERO;
        }
        self.lease
            .expiry()
            .saturating_duration_since(Instant::now())
    }
}

impl Lifetime for LeaseLifetime {
    fn add_key(&self, store: &Store, key: Key) -> Result<()> {
        self.lease.objects.add(store, key, "lease")?;
        self.lease.expire_in_connector(&[(store.clone(), key)]);
        Ok(())
    }

    fn close(&self) {
        self.lease.objects.end(Ending::LeaseClosed);
        // Under the expiry's lock: the lease's thread is either before its
        // check of `ended` or waiting, never in between.
        let _expiry = self.lease.expiry();
        self.lease.changed.notify_all();
    }

    fn done(&self) -> bool {
        self.lease.objects.ended()
    }
}

impl fmt::Debug for LeaseLifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseLifetime")
            .field("remaining", &self.remaining())
            .field("done", &self.done())
            .finish()
    }
}

/// Objects evicted when the process exits normally (returning from `main`,
/// or `std::process::exit`); not on a crash or a signal. There is one per
/// process: [`StaticLifetime::get`].
pub struct StaticLifetime {
    objects: Objects,
}

impl StaticLifetime {
    /// The process's static lifetime. The first call arranges for it to end
    /// at exit.
    pub fn get() -> &'static StaticLifetime {
        static LIFETIME: OnceLock<StaticLifetime> = OnceLock::new();
        LIFETIME.get_or_init(|| {
            extern "C" fn at_exit() {
                // A panic must not unwind into the C runtime's exit.
                let _ =
                    std::panic::catch_unwind(|| StaticLifetime::get().objects.end(Ending::Static));
            }
            // SAFETY: registers a plain `extern "C"` function that takes no
            // arguments; it runs once, at exit.
            if unsafe { libc::atexit(at_exit) } != 0 {
                tracing::warn!("static lifetime: could not register the exit handler");
            }
            StaticLifetime {
                objects: Objects::default(),
            }
        })
    }
}

impl Lifetime for StaticLifetime {
    fn add_key(&self, store: &Store, key: Key) -> Result<()> {
        self.objects.add(store, key, "static")
    }

    fn close(&self) {
        self.objects.end(Ending::Static);
    }

    fn done(&self) -> bool {
        self.objects.ended()
    }
}

impl fmt::Debug for StaticLifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticLifetime")
            .field("objects", &self.objects.lock().len())
            .field("done", &self.done())
            .finish()
    }
}

impl Store {
    /// Stores `value` (see [`put`](Store::put)) and associates it with
    /// `lifetime`; if the lifetime has ended, the object is evicted again
    /// and [`Error::LifetimeEnded`] returned.
    pub fn put_with_lifetime<T: crate::Storable>(
        &self,
        value: &T,
        lifetime: &dyn Lifetime,
    ) -> Result<Key> {
        let key = self.put(value)?;
        if let Err(e) = lifetime.add_key(self, key) {
            let _ = self.evict(&key);
            return Err(e);
        }
        Ok(key)
    }

    /// Stores `value` and returns a proxy of it (see
    /// [`proxy`](Store::proxy)), its object associated with `lifetime`.
    pub fn proxy_with_lifetime<T: crate::Storable>(
        &self,
        value: T,
        lifetime: &dyn Lifetime,
    ) -> Result<Proxy<T>> {
        let key = self.put_with_lifetime(&value, lifetime)?;
        Ok(Proxy::resolved(self.factory(key), value))
    }
}
