//! The registry of task wrappers by name.

use super::*;
use crate::error::{Error, Result};

/// A task wrapper registered by `#[proxied]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct TaskEntry {
    name: &'static str,
    run: TaskFn,
    file: &'static str,
    line: u32,
}

impl TaskEntry {
    pub const fn new(name: &'static str, run: TaskFn, file: &'static str, line: u32) -> Self {
        TaskEntry {
            name,
            run,
            file,
            line,
        }
    }
}

inventory::collect!(TaskEntry);

/// The wrapper registered under `name`, or an error listing the registered
/// names (or the places registering `name` twice).
pub fn find_task(name: &str) -> Result<TaskFn> {
    let mut found = inventory::iter::<TaskEntry>().filter(|t| t.name == name);
    match (found.next(), found.next()) {
        (Some(entry), None) => Ok(entry.run),
        (None, _) => Err(Error::UnknownTask {
            name: name.to_string(),
            registered: crate::connectors::join(registered_tasks()),
        }),
        (Some(_), Some(_)) => {
            let mut places: Vec<String> = inventory::iter::<TaskEntry>()
                .filter(|t| t.name == name)
                .map(|t| format!("{}:{}", t.file, t.line))
                .collect();
            places.sort();
            Err(Error::DuplicateTask {
                name: name.to_string(),
                locations: places.join(", "),
            })
        }
    }
}

/// Names of all tasks registered in this executable.
pub fn registered_tasks() -> impl Iterator<Item = &'static str> {
    inventory::iter::<TaskEntry>().map(|t| t.name)
}

/// Checks that no two tasks share a name; call it early (e.g. in tests) to
/// find a collision before a task hits it.
pub fn check_registry() -> Result<()> {
    let mut names: Vec<&str> = registered_tasks().collect();
    names.sort_unstable();
    for pair in names.windows(2) {
        if pair[0] == pair[1] {
            find_task(pair[0])?;
        }
    }
    Ok(())
}
