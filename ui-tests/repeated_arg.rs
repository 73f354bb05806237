use proxystore::proxied;

#[proxied(types = [String], types = [Vec<f64>])]
fn scale(label: String, values: Vec<f64>) -> Vec<f64> {
    values.iter().map(|v| v * label.len() as f64).collect()
}

fn main() {
    assert_eq!(scale("ab".to_string(), vec![1.0]), [2.0]);
}
