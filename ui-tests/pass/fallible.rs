use proxystore::proxied;
use std::fmt;

#[derive(Debug)]
pub struct ParseFailure(String);

impl fmt::Display for ParseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a number: {}", self.0)
    }
}

#[proxied]
fn parse(text: String) -> Result<i64, ParseFailure> {
    text.parse().map_err(|_| ParseFailure(text))
}

#[proxied(types = [Vec<u8>])]
fn read(path: String) -> std::io::Result<Vec<u8>> {
    std::fs::read(path)
}

mod checks {
    use super::{parse, ParseFailure};
    use proxystore::proxied;

    // A crate's own alias counts too: its last segment is `Result`.
    type Result<T> = std::result::Result<T, ParseFailure>;

    #[proxied]
    pub(crate) fn check(text: String) -> Result<()> {
        parse(text).map(drop)
    }
}

fn main() {
    let _task: proxystore::Task<i64> = parse::task("1".to_string());
    let _task: proxystore::Task<Vec<u8>> = read::task("/dev/null".to_string());
    let _task: proxystore::Task<()> = checks::check::task("1".to_string());
    assert!(checks::check("x".to_string()).is_err());
}
