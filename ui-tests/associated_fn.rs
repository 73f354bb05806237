use proxystore::proxied;

struct Model;

impl Model {
    #[proxied]
    fn scale(weights: Vec<f64>, by: f64) -> Vec<f64> {
        weights.iter().map(|w| w * by).collect()
    }
}

fn main() {
    assert_eq!(Model::scale(vec![1.0], 2.0), [2.0]);
}
