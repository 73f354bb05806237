use proxystore::proxied;

#[proxied]
fn summary(name: &str, values: &[f64]) -> String {
    format!("{name}: {}", values.len())
}

fn main() {
    assert_eq!(summary("x", &[1.0]), "x: 1");
    let _task = summary::task("x".to_string(), vec![1.0]);
}
