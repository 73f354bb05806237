//! A short description of a task's arguments, for the errors of a task that
//! failed: `42, "detector-3", Vec<f64>, proxy of String, result of #12`.
//!
//! Taken when the task is built, and cheap: numbers and booleans are kept
//! as they are, text is cut to a few characters, anything else is named by
//! its type. Nothing is formatted unless the task fails.

use std::any::Any;
use std::fmt;

use super::Arg;
use crate::task::TaskId;

/// How many characters of a text argument are kept.
const TEXT: usize = 24;

pub(crate) enum ArgSummary {
    Int(i128),
    Float(f64),
    Bool(bool),
    /// The first characters, and whether there were more.
    Text(Box<str>, bool),
    Type(&'static str),
    Stored(&'static str),
    Upstream(TaskId),
}

impl ArgSummary {
    pub(crate) fn of<T: 'static>(arg: &Arg<T>) -> ArgSummary {
        match arg {
            Arg::Value(value) => value_summary(value),
            Arg::Stored(_) | Arg::Owned(_) => ArgSummary::Stored(std::any::type_name::<T>()),
            Arg::Upstream(upstream) => ArgSummary::Upstream(upstream.dependency.shared.id),
        }
    }
}

fn value_summary<T: 'static>(value: &T) -> ArgSummary {
    let any = value as &dyn Any;
    macro_rules! ints {
        ($($t:ty),*) => {
            $(if let Some(v) = any.downcast_ref::<$t>() {
                return ArgSummary::Int(*v as i128);
            })*
        };
    }
    ints!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, usize);
    if let Some(v) = any.downcast_ref::<f64>() {
        return ArgSummary::Float(*v);
    }
    if let Some(v) = any.downcast_ref::<f32>() {
        return ArgSummary::Float(f64::from(*v));
    }
    if let Some(v) = any.downcast_ref::<bool>() {
        return ArgSummary::Bool(*v);
    }
    let text = any
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| any.downcast_ref::<&'static str>().copied());
    if let Some(text) = text {
        let cut: String = text.chars().take(TEXT).collect();
        let more = cut.len() < text.len();
        return ArgSummary::Text(cut.into(), more);
    }
    ArgSummary::Type(std::any::type_name::<T>())
}

/// `alloc::vec::Vec<f64>` as `Vec<f64>`.
fn short_type(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut segment = String::new();
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            segment.push(c);
        } else {
            out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(segment.rsplit("::").next().unwrap_or(&segment));
    out
}

impl fmt::Display for ArgSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgSummary::Int(v) => write!(f, "{v}"),
            ArgSummary::Float(v) => write!(f, "{v}"),
            ArgSummary::Bool(v) => write!(f, "{v}"),
            ArgSummary::Text(text, more) => {
                write!(f, "{text:?}")?;
                if *more {
                    f.write_str("…")?;
                }
                Ok(())
            }
            ArgSummary::Type(name) => f.write_str(&short_type(name)),
            ArgSummary::Stored(name) => write!(f, "proxy of {}", short_type(name)),
            ArgSummary::Upstream(id) => write!(f, "result of {id}"),
        }
    }
}

/// The summaries of a task's arguments, in order, comma-separated.
pub(crate) fn render(summaries: &[ArgSummary]) -> String {
    let mut out = String::new();
    for (i, s) in summaries.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&s.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_summarized_briefly() {
        let all = [
            value_summary(&42i64),
            value_summary(&-1.5f64),
            value_summary(&true),
            value_summary(&"x".repeat(40)),
            value_summary(&"short".to_string()),
            value_summary(&vec![1.0f64; 1000]),
            value_summary(&Some(std::collections::HashMap::<String, Vec<u8>>::new())),
        ];
        assert_eq!(
            render(&all),
            format!(
                "42, -1.5, true, {:?}…, \"short\", Vec<f64>, Option<HashMap<String, Vec<u8>>>",
                "x".repeat(24)
            )
        );
        assert_eq!(render(&[]), "");
    }
}
