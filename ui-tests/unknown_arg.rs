use proxystore::proxied;

#[proxied(typs = [String])]
fn shout(text: String) -> String {
    text.to_uppercase()
}

fn main() {
    assert_eq!(shout("a".to_string()), "A");
    let _task = shout::task("a".to_string());
}
