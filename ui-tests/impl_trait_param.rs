use proxystore::proxied;

#[proxied]
fn total(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().sum()
}

fn main() {
    assert_eq!(total(vec![1.0, 2.0]), 3.0);
}
