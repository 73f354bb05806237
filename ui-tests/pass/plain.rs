use proxystore::proxied;

#[proxied]
fn double(x: i64) -> i64 {
    x * 2
}

fn main() {
    let task: proxystore::Task<i64> = double::task(21);
    // The module path of the fn: the crate's name, then `double`.
    assert!(double::NAME.ends_with("::double"));
    assert_eq!(task.name(), double::NAME);
    assert_eq!(double(21), 42);
}
