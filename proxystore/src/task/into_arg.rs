//! What can be passed for a task's parameter: [`IntoArg`]'s implementations.

use super::*;

impl<T: Storable> IntoArg<T> for T {
    fn into_arg(self) -> Arg<T> {
        Arg::Value(self)
    }
}

impl IntoArg<String> for &str {
    fn into_arg(self) -> Arg<String> {
        Arg::Value(self.to_owned())
    }
}

impl IntoArg<String> for &String {
    fn into_arg(self) -> Arg<String> {
        Arg::Value(self.clone())
    }
}

impl<T: Storable> IntoArg<T> for OwnedProxy<T> {
    fn into_arg(self) -> Arg<T> {
        // Given up without evicting: the task's input owns it now.
        let (factory, shared_with) = OwnedProxy::into_parts(self);
        Arg::Owned(OwnedInput::new(factory, shared_with))
    }
}

impl<T: Storable> IntoArg<T> for TaskValue<T> {
    fn into_arg(self) -> Arg<T> {
        match self {
            TaskValue::Value(value) => Arg::Value(value),
            TaskValue::Owned(owned) => owned.into_arg(),
            TaskValue::Proxy(proxy) => proxy.into_arg(),
        }
    }
}

impl<T: Storable + Clone> IntoArg<T> for &TaskValue<T> {
    fn into_arg(self) -> Arg<T> {
        match self {
            TaskValue::Value(value) => Arg::Value(value.clone()),
            TaskValue::Owned(owned) => owned.into_arg(),
            TaskValue::Proxy(proxy) => proxy.into_arg(),
        }
    }
}

impl<T: Storable> IntoArg<T> for handle::TaskFuture<T> {
    fn into_arg(self) -> Arg<T> {
        // The future is dropped, so its result will be discarded (an owned
        // one evicted) once this task, its last dependent, ends.
        Arg::Upstream(Upstream {
            dependency: self.depend(),
        })
    }
}

impl<T: Storable> IntoArg<T> for &handle::TaskFuture<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Upstream(Upstream {
            dependency: self.depend(),
        })
    }
}

impl<T: Storable> IntoArg<T> for Proxy<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Stored(Proxy::factory(&self).clone())
    }
}

impl<T: Storable> IntoArg<T> for &Proxy<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Stored(Proxy::factory(self).clone())
    }
}

impl<T: Storable> IntoArg<T> for &OwnedProxy<T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Stored(OwnedProxy::factory(self).clone())
    }
}

impl<T: Storable> IntoArg<T> for RefProxy<'_, T> {
    fn into_arg(self) -> Arg<T> {
        Arg::Stored(RefProxy::factory(&self).clone())
    }
}
