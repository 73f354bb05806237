//! What a consumer yields: an object of the stream, with its metadata.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use super::broker::Ack;
use super::Metadata;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::owned::{OwnedProxy, RefProxy};
use crate::proxy::Proxy;
use crate::Storable;

pub(crate) enum Payload<T: Storable> {
    /// The object came inside the event.
    Inline(T),
    /// The consumer owns the object: dropping it evicts it.
    Owned(OwnedProxy<T>),
    /// The object is shared with other readers; the producer's lifetime
    /// evicts it.
    Shared(Proxy<T>),
}

/// An object received from a stream, with its [`Metadata`].
///
/// It dereferences to the object, read from the store on first use (and
/// panics if it cannot be read; [`Item::resolve`] returns the error
/// instead). Its own operations are associated functions
/// (`Item::metadata(&item)`), so they never hide the object's methods.
///
/// What dropping it does depends on how the object was sent: one the
/// consumer owns ([`StreamProducer::send`](super::StreamProducer::send)) is
/// evicted from its store, one shared with other readers
/// ([`send_shared`](super::StreamProducer::send_shared)) is left to its
/// lifetime. On a durable broker (`RedisStreams`, feature `redis`)
/// the event is acknowledged once every item of its message is dropped, so
/// a consumer that dies while holding an item leaves the event to be
/// delivered again to another.
pub struct Item<T: Storable> {
    // Field order is drop order: the object is evicted before the event is
    // acknowledged, so a consumer that dies in between leaves the event.
    payload: Payload<T>,
    metadata: Metadata,
    topic: Arc<str>,
    _ack: Option<Arc<Ack>>,
}

impl<T: Storable> Item<T> {
    pub(crate) fn new(
        payload: Payload<T>,
        metadata: Metadata,
        topic: Arc<str>,
        ack: Option<Arc<Ack>>,
    ) -> Self {
        Item {
            payload,
            metadata,
            topic,
            _ack: ack,
        }
    }

    /// The metadata the object was sent with.
    pub fn metadata(this: &Self) -> &Metadata {
        &this.metadata
    }

    /// The topic it arrived on.
    pub fn topic(this: &Self) -> &str {
        &this.topic
    }

    /// The object, read from the store if it was not yet.
    pub fn resolve(this: &Self) -> Result<&T> {
        match &this.payload {
            Payload::Inline(value) => Ok(value),
            Payload::Owned(owned) => OwnedProxy::resolve(owned),
            Payload::Shared(proxy) => Proxy::resolve(proxy),
        }
    }

    /// The key of the object in its store (`None` for an object that came
    /// inside its event).
    pub fn key(this: &Self) -> Option<Key> {
        match &this.payload {
            Payload::Inline(_) => None,
            Payload::Owned(owned) => Some(OwnedProxy::key(owned)),
            Payload::Shared(proxy) => Some(Proxy::key(proxy)),
        }
    }

    /// Whether this consumer owns the object (dropping the item evicts it).
    pub fn is_owned(this: &Self) -> bool {
        matches!(this.payload, Payload::Owned(_))
    }

    /// A proxy of an object this consumer owns, to pass to a task: the
    /// borrow keeps the item (and so the object) alive while it is used.
    /// `None` for a shared object (use [`Item::proxy`]) or one that came
    /// inside its event.
    pub fn borrow(this: &Self) -> Option<RefProxy<'_, T>> {
        match &this.payload {
            Payload::Owned(owned) => Some(OwnedProxy::borrow(owned)),
            _ => None,
        }
    }

    /// A plain proxy of a shared object, valid until the producer's
    /// lifetime for it ends. `None` for an object this consumer owns (use
    /// [`Item::borrow`] or [`Item::into_owned`]) or one that came inside its
    /// event.
    pub fn proxy(this: &Self) -> Option<Proxy<T>> {
        match &this.payload {
            Payload::Shared(proxy) => Some(proxy.clone()),
            _ => None,
        }
    }

    /// The owner of an object this consumer owns, to keep it beyond the
    /// item (the event is acknowledged now). `Err` gives back any other
    /// item.
    pub fn into_owned(this: Self) -> std::result::Result<OwnedProxy<T>, Self> {
        match this.payload {
            Payload::Owned(owned) => Ok(owned),
            payload => Err(Item { payload, ..this }),
        }
    }

    /// The object itself. One this consumer owns is evicted from its store;
    /// a shared one is read afresh (other readers keep theirs).
    pub fn into_inner(this: Self) -> Result<T> {
        match this.payload {
            Payload::Inline(value) => Ok(value),
            Payload::Owned(owned) => OwnedProxy::into_inner(owned),
            Payload::Shared(proxy) => {
                let factory = Proxy::factory(&proxy);
                let store = factory.store()?;
                let key = factory.key();
                store.load(&key)?.ok_or_else(|| Error::MissingObject {
                    key,
                    store: store.name().to_string(),
                })
            }
        }
    }
}

impl<T: Storable> Deref for Item<T> {
    type Target = T;

    fn deref(&self) -> &T {
        match Item::resolve(self) {
            Ok(value) => value,
            Err(e) => panic!("could not read a stream object: {e}"),
        }
    }
}

impl<T: Storable> fmt::Debug for Item<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.payload {
            Payload::Inline(_) => "inline",
            Payload::Owned(_) => "owned",
            Payload::Shared(_) => "shared",
        };
        f.debug_struct("Item")
            .field("topic", &&*self.topic)
            .field("kind", &kind)
            .field("key", &Item::key(self))
            .field("metadata", &self.metadata)
            .finish()
    }
}
