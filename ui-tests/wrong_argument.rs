use proxystore::proxied;

#[proxied(types = [String])]
fn concat(base: String, num: i64) -> String {
    format!("{base}-{num}")
}

fn main() {
    // A number for the `String` parameter.
    let _ = concat::task(42u8, 1);
}
