use proxystore::proxied;

#[proxied]
fn add((a, b): (i64, i64)) -> i64 {
    a + b
}

fn main() {
    assert_eq!(add((1, 2)), 3);
}
