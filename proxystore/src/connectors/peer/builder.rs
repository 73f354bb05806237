//! [`PeerConnectorBuilder`]: a peer connector's options.

use super::*;

/// Builds a [`PeerConnector`]; made by [`PeerConnector::builder`].
#[derive(Debug)]
pub struct PeerConnectorBuilder {
    pub(super) index: Arc<dyn Connector>,
    pub(super) options: Options,
    pub(super) listen: Option<SocketAddr>,
    pub(super) keep_on_close: bool,
}

impl PeerConnectorBuilder {
    /// Serve this process's objects on `addr` (port 0: any free port),
    /// whatever [`PEER_ADDR_ENV`] says. Only for this connector: processes
    /// that rebuild it from its configuration choose their own address.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Processes serve on the address of the interface their host uses to
    /// reach `addr` (`host:port`), unless told otherwise (see
    /// [Which address](PeerConnector#which-address)). By default, the index's
    /// Redis server when the index is a `RedisConnector`.
    pub fn route_via(mut self, addr: impl Into<String>) -> Self {
        self.options.route_via = Some(addr.into());
        self
    }

    /// How long connecting to a peer may take before its objects are
    /// taken for lost (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout_ms = millis(timeout);
        self
    }

    /// How long a peer may stall mid-request before its objects are taken
    /// for lost (default [`DEFAULT_IO_TIMEOUT`]).
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.options.io_timeout_ms = millis(timeout);
        self
    }

    /// The largest object a reader accepts (default
    /// [`DEFAULT_MAX_OBJECT_SIZE`]); a larger one is refused before
    /// anything is allocated.
    pub fn max_object_size(mut self, bytes: u64) -> Self {
        self.options.max_object_size = bytes;
        self
    }

    /// [`close`](Connector::close) leaves the objects where they are
    /// (by default the connector made by this builder evicts every object
    /// its index lists, wherever it is kept).
    pub fn keep_on_close(mut self) -> Self {
        self.keep_on_close = true;
        self
    }

    /// The connector; fails with [`Error::InvalidConfig`] for a zero
    /// timeout or an address of [`PEER_ADDR_ENV`] that is not one.
    pub fn build(self) -> Result<PeerConnector> {
        let connector = PeerConnector {
            index: self.index,
            options: self.options,
            listen: self.listen,
            clear: !self.keep_on_close,
        };
        connector.check()?;
        Ok(connector)
    }
}
