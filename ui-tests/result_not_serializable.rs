use proxystore::proxied;

struct Report {
    total: f64,
}

#[proxied(types = [Vec<f64>])]
fn report(values: Vec<f64>) -> Report {
    Report {
        total: values.iter().sum(),
    }
}

fn main() {
    assert_eq!(report(vec![1.0]).total, 1.0);
}
