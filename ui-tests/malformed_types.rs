use proxystore::proxied;

#[proxied(types = String)]
fn shout(text: String) -> String {
    text.to_uppercase()
}

fn main() {
    assert_eq!(shout("a".to_string()), "A");
}
