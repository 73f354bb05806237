use proxystore::proxied;

#[proxied(types = [Vec<f64>, std::string::String])]
fn scale(label: String, values: Vec<f32>) -> Vec<f32> {
    values.iter().map(|v| v * label.len() as f32).collect()
}

fn main() {
    assert_eq!(scale("ab".to_string(), vec![1.0]), [2.0]);
}
