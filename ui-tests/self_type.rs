use proxystore::proxied;

#[derive(serde::Serialize, serde::Deserialize)]
struct Model {
    weights: Vec<f64>,
}

impl Model {
    #[proxied]
    fn scaled(model: Self, by: f64) -> Vec<f64> {
        model.weights.iter().map(|w| w * by).collect()
    }
}

fn main() {
    let model = Model { weights: vec![1.0] };
    assert_eq!(Model::scaled(model, 2.0), [2.0]);
}
