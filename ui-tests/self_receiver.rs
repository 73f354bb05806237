use proxystore::proxied;

struct Model {
    weights: Vec<f64>,
}

impl Model {
    #[proxied]
    fn predict(&self, x: f64) -> f64 {
        self.weights.iter().sum::<f64>() * x
    }
}

fn main() {
    let model = Model { weights: vec![1.0] };
    assert_eq!(model.predict(2.0), 2.0);
}
