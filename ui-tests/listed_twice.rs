use proxystore::proxied;

#[proxied(types = [Vec<f64>, Vec<f64>])]
fn total(values: Vec<f64>) -> f64 {
    values.iter().sum()
}

fn main() {
    assert_eq!(total(vec![1.0]), 1.0);
}
