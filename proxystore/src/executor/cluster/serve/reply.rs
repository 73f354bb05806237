//! A worker's answers: the reply to a job's caller, sent with the removal
//! of its entry.

use super::*;

impl Serving<'_> {
    /// Sends a job's reply and removes its entry (the [`FINISH`] script):
    /// what the script answered (`None`: stopped first), and whether the
    /// reply had to be replaced by a failure because the server refused it
    /// for good. Then the job fails with that refusal, at this worker's
    /// reply expiry, and the worker goes on; if even that is refused, the
    /// entry is dropped (answered as if the caller were gone).
    pub(super) fn finish(
        &mut self,
        entry: &str,
        caller: &str,
        id: u64,
        reply: &Reply,
        ttl: u64,
        sealed: bool,
    ) -> (Option<i64>, bool) {
        let keys = self.w.keys.clone();
        let (reply_key, caller_alive) = (keys.reply(caller), keys.alive(caller));
        let send = |this: &mut Self, blob: &[u8], ttl: u64| {
            this.must("sending a reply", |con, w| {
                FINISH
                    .call(&[&keys.jobs(), &reply_key, &caller_alive])
                    .arg(GROUP)
                    .arg(entry)
                    .arg(blob)
                    .arg(ttl)
                    .arg(&w.consumer)
                    .invoke::<i64>(con)
            })
        };
        let host = Some(&self.w.host[..]);
        let seal = |reply: &Reply| match sealed {
            true => keys.seal(REPLY_LABEL, caller, reply.encode_on(id, host)),
            false => reply.encode_on(id, host),
        };
        let refusal = match send(self, &seal(reply), ttl) {
            Ok(answer) => return (Some(answer), false),
            Err(None) => return (None, false),
            Err(Some(e)) => self.w.server.err("sending a task's reply", e),
        };
        tracing::error!(entry, error = %refusal, "cluster worker: the reply was refused; failing the job");
        let failure = Reply::Failed(format!(
            "the worker could not send this task's reply ({refusal}); check the queue's server \
             and the caller's settings"
        ));
        match send(self, &seal(&failure), ms(self.w.settings.reply_ttl)) {
            Ok(answer) => (Some(answer), true),
            Err(None) => (None, true),
            Err(Some(_)) => {
                self.drop_entry(entry);
                (Some(0), true)
            }
        }
    }

    /// Acknowledges and deletes an entry that will not run.
    pub(super) fn drop_entry(&mut self, id: &str) {
        let _ = self.must("dropping a job", |con, w| {
            redis::pipe()
                .cmd("XACK")
                .arg(w.keys.jobs())
                .arg(GROUP)
                .arg(id)
                .ignore()
                .cmd("XDEL")
                .arg(w.keys.jobs())
                .arg(id)
                .ignore()
                .query::<()>(con)
        });
    }
}
