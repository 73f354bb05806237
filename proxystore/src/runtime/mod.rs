//! Runtime helpers at the bottom of the crate, used by every layer above:
//! polling before sleeping ([`spin`]), the process-wide background threads
//! ([`background`]), store I/O off an async caller's thread ([`unblock`])
//! and evictions too ([`deferred`]),
//! how a child process ended, in words ([`exit`]), and doubling pauses
//! ([`Backoff`]).

pub(crate) mod background;
pub(crate) mod deferred;
pub(crate) mod exit;
pub(crate) mod spin;
pub(crate) mod unblock;

use std::time::Duration;

/// Pauses that double from a first one up to a ceiling: between retries
/// of a connection, or looks for an object not there yet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Backoff { next: first, max }
    }

    /// The pause to take now; the next one is twice as long (at most the
    /// ceiling).
    pub(crate) fn pause(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(20), ms(100));
        let pauses: Vec<_> = (0..5).map(|_| backoff.pause()).collect();
        assert_eq!(pauses, [ms(20), ms(40), ms(80), ms(100), ms(100)]);
    }
}
