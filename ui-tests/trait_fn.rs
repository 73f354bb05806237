use proxystore::proxied;

trait Scale {
    #[proxied]
    fn scale(weights: Vec<f64>, by: f64) -> Vec<f64> {
        weights.iter().map(|w| w * by).collect()
    }
}

fn main() {}
