use proxystore::proxied;

#[derive(Debug)]
struct ParseFailure;

#[proxied]
fn parse(text: String) -> Result<i64, ParseFailure> {
    text.parse().map_err(|_| ParseFailure)
}

fn main() {
    assert!(parse("x".to_string()).is_err());
}
