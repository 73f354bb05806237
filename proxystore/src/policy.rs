//! Runtime should-proxy policies.
//!
//! Arguments and results whose type is not listed in
//! `#[proxied(types = [...])]` are offered to the executor's policy. The
//! policy is also evaluated in worker processes (for results), so it is
//! data, not a closure: a user predicate is registered by name with
//! [`register_predicate!`](crate::register_predicate).
//!
//! ```
//! use std::any::Any;
//! use proxystore::policy::{ShouldProxy, ValueInfo};
//!
//! let large = ShouldProxy::MinSize(1 << 20);
//! let info = ValueInfo { type_name: "alloc::vec::Vec<u8>", size: 4 << 20, value: &() as &(dyn Any + Send + Sync) };
//! assert!(large.should_proxy(&info)?);
//! assert!(!ShouldProxy::Never.should_proxy(&info)?);
//! assert!(ShouldProxy::types::<(Vec<u8>,)>().should_proxy(&info)?);
//! # Ok::<(), proxystore::Error>(())
//! ```

use std::any::Any;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::connectors::join;
use crate::error::{Error, Result};

/// What a policy sees of a value.
#[derive(Clone, Copy)]
pub struct ValueInfo<'a> {
    /// `std::any::type_name` of the value's type.
    pub type_name: &'static str,
    /// Size of the value once encoded, in bytes.
    pub size: usize,
    /// The value itself.
    pub value: &'a (dyn Any + Send + Sync),
}

impl fmt::Debug for ValueInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueInfo")
            .field("type_name", &self.type_name)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Decides which arguments and results go through the store.
///
/// ```
/// use proxystore::policy::ShouldProxy;
///
/// let never = ShouldProxy::default();                          // ProxyNever
/// let always = ShouldProxy::Always;
/// let strings = ShouldProxy::types::<(String, Vec<f64>)>();    // ProxyType
/// let large = ShouldProxy::MinSize(64 * 1024);                 // by encoded size
/// let either = ShouldProxy::Any(vec![strings, large]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ShouldProxy {
    /// Never proxy (ProxyStore's `ProxyNever`, the default).
    #[default]
    Never,
    /// Always proxy (`ProxyAlways`).
    Always,
    /// Proxy values of these types (`ProxyType`), by `std::any::type_name`.
    Types(Vec<String>),
    /// Proxy values whose encoded size is at least this many bytes.
    MinSize(usize),
    /// A predicate registered with [`register_predicate!`](crate::register_predicate).
    Predicate(String),
    /// Proxy if any of these says so.
    Any(Vec<ShouldProxy>),
}

/// A tuple of types, for [`ShouldProxy::types`].
pub trait TypeList {
    /// The `type_name`s of the types.
    fn type_names() -> Vec<String>;
}

macro_rules! type_lists {
    ($(($($t:ident),*)),*) => {$(
        impl<$($t: 'static),*> TypeList for ($($t,)*) {
            fn type_names() -> Vec<String> {
                vec![$(std::any::type_name::<$t>().to_string()),*]
            }
        }
    )*};
}
type_lists!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F)
);

impl ShouldProxy {
    /// `ProxyType`: proxy values of the types in the tuple `L`.
    pub fn types<L: TypeList>() -> Self {
        ShouldProxy::Types(L::type_names())
    }

    /// A registered predicate, checked now so a typo fails early.
    pub fn predicate(name: &str) -> Result<Self> {
        find_predicate(name)?;
        Ok(ShouldProxy::Predicate(name.to_string()))
    }

    /// Whether the value should be proxied.
    pub fn should_proxy(&self, info: &ValueInfo<'_>) -> Result<bool> {
        Ok(match self {
            ShouldProxy::Never => false,
            ShouldProxy::Always => true,
            ShouldProxy::Types(names) => names.iter().any(|n| n == info.type_name),
            ShouldProxy::MinSize(min) => info.size >= *min,
            ShouldProxy::Predicate(name) => (find_predicate(name)?.check)(info),
            ShouldProxy::Any(all) => {
                for policy in all {
                    if policy.should_proxy(info)? {
                        return Ok(true);
                    }
                }
                false
            }
        })
    }

    /// Whether this policy never proxies anything (fast path).
    pub(crate) fn is_never(&self) -> bool {
        matches!(self, ShouldProxy::Never)
    }
}

/// A named predicate; made by [`register_predicate!`](crate::register_predicate).
#[derive(Debug)]
pub struct Predicate {
    name: &'static str,
    check: fn(&ValueInfo<'_>) -> bool,
}

impl Predicate {
    #[doc(hidden)]
    pub const fn new(name: &'static str, check: fn(&ValueInfo<'_>) -> bool) -> Self {
        Predicate { name, check }
    }
}

inventory::collect!(Predicate);

fn find_predicate(name: &str) -> Result<&'static Predicate> {
    let mut found = inventory::iter::<Predicate>().filter(|p| p.name == name);
    match (found.next(), found.next()) {
        (Some(p), None) => Ok(p),
        (None, _) => Err(Error::InvalidConfig {
            kind: "should_proxy".into(),
            reason: format!(
                "no predicate named `{name}` is registered; registered: [{}]",
                join(inventory::iter::<Predicate>().map(|p| p.name))
            ),
        }),
        (Some(_), Some(_)) => Err(Error::InvalidConfig {
            kind: "should_proxy".into(),
            reason: format!("predicate `{name}` is registered more than once"),
        }),
    }
}

/// Registers a should-proxy predicate under a name, for
/// [`ShouldProxy::predicate`]. It runs wherever a policy is evaluated,
/// including worker processes.
///
/// ```
/// use proxystore::policy::{ShouldProxy, ValueInfo};
///
/// fn long_strings(info: &ValueInfo<'_>) -> bool {
///     info.value.downcast_ref::<String>().is_some_and(|s| s.len() > 1000)
/// }
/// proxystore::register_predicate!("docs.long_strings", long_strings);
///
/// let policy = ShouldProxy::predicate("docs.long_strings")?;
/// # Ok::<(), proxystore::Error>(())
/// ```
#[macro_export]
macro_rules! register_predicate {
    ($name:expr, $check:expr) => {
        $crate::__private::inventory::submit! {
            $crate::policy::Predicate::new($name, $check)
        }
    };
}
