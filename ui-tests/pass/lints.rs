//! Generated code adds no warnings, even with strict lints.
#![deny(warnings, missing_docs, unreachable_pub, rust_2018_idioms, unused)]
#![deny(unused_qualifications, unused_results, trivial_casts)]

use proxystore::proxied;

/// Public tasks of this crate.
pub mod jobs {
    use proxystore::proxied;

    /// Adds.
    #[proxied]
    pub fn add(a: i64, b: i64) -> i64 {
        a + b
    }

    /// Never submitted.
    #[proxied(types = [Vec<u8>])]
    pub(crate) fn unused(bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }

    /// Takes no arguments.
    #[proxied]
    pub fn nothing() {}

    /// Always fails.
    #[proxied]
    pub fn fails() -> Result<u8, String> {
        Err("no".to_string())
    }
}

#[allow(non_snake_case)]
#[proxied]
fn Shout(text: String) -> String {
    text.to_uppercase()
}

#[proxied]
fn serde(value: u8) -> u8 {
    value
}

#[proxied]
fn task(value: u8) -> u8 {
    value
}

fn main() {
    drop(jobs::add::task(1, 2));
    drop(Shout::task("a".to_string()));
    assert_eq!(Shout("a".to_string()), "A");
    assert_eq!(serde(1), 1);
    assert_eq!(task(1), 1);
    drop(task::task(1));
}
