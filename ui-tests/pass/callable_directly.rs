use proxystore::proxied;

#[proxied(types = [String])]
pub fn concat(base: String, num: i64) -> String {
    format!("{base}-{num}")
}

fn main() {
    // The fn and the module share the name: one is a value, the other a type
    // namespace item.
    assert_eq!(concat("foobar".to_string(), 42), "foobar-42");
    let f: fn(String, i64) -> String = concat;
    assert_eq!(f("a".into(), 1), "a-1");
    let _task = concat::task("foobar".to_string(), 42);
}
