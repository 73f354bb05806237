use proxystore::proxied;

#[proxied]
fn label(code: u8) -> &'static str {
    if code == 0 {
        "ok"
    } else {
        "error"
    }
}

fn main() {
    assert_eq!(label(0), "ok");
}
