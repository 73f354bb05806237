use proxystore::proxied;

#[proxied]
fn scale(values: Vec<f64>, #[cfg(test)] weight: f64) -> Vec<f64> {
    values
}

fn main() {
    assert_eq!(scale(vec![1.0]), [1.0]);
}
