//! How errors show what they hold: task ids, argument summaries, and
//! what to do about a Redis failure.

use super::*;

/// What to do about a Redis error, from what the client or server said.
pub(super) fn redis_hint(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("refused") {
        "; is redis-server running at that address and port?"
    } else if m.contains("noauth") || m.contains("wrongpass") || m.contains("invalid password") {
        "; give the password in the URL (`redis://:PASSWORD@host:port`) or the ACL user \
         (`redis://USER:PASSWORD@host:port`)"
    } else if m.contains("oom") || m.contains("maxmemory") {
        "; the server is out of memory (`maxmemory`): evict objects or give it more"
    } else if m.contains("timed out") || m.contains("timeout") {
        "; the server is slow or out of reach (a network partition, a stopped host)"
    } else if m.contains("readonly") {
        "; that server is a read-only replica: use its primary"
    } else {
        ""
    }
}

/// A task's id as errors show it: ` #17`, or nothing.
pub(super) struct Id<'a>(pub(super) &'a Option<TaskId>);

impl std::fmt::Display for Id<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, " {id}"),
            None => Ok(()),
        }
    }
}

/// A task's arguments as errors show them: ` (arguments: 42, "x")`.
pub(super) struct Args<'a>(pub(super) &'a Option<String>);

impl std::fmt::Display for Args<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(args) => write!(f, " (arguments: {args})"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn redis_errors_say_what_to_do_for_common_causes() {
        let error = |message: &str| {
            Error::Redis {
                server: "db:6379/0".into(),
                operation: "GET".into(),
                message: message.into(),
            }
            .to_string()
        };
        assert!(error("Connection refused (os error 111)").contains("is redis-server running"));
        assert!(error("NOAUTH Authentication required.").contains("redis://:PASSWORD@"));
        assert!(error("OOM command not allowed").contains("maxmemory"));
        assert!(error("I/O error: timed out").contains("out of reach"));
        assert!(error("An unusual thing").ends_with("An unusual thing"));
    }
}
