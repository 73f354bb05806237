use proxystore::proxied;

#[proxied(name = "")]
fn shout(text: String) -> String {
    text.to_uppercase()
}

fn main() {
    assert_eq!(shout("a".to_string()), "A");
}
