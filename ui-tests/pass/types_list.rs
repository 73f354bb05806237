use proxystore::proxied;

#[proxied(types = [String, Vec<f64>])]
pub fn scale(label: String, values: Vec<f64>, by: f64) -> Vec<f64> {
    values.iter().map(|v| v * by * label.len() as f64).collect()
}

#[proxied(types = [Vec< Vec<f64> >])]
fn transpose(rows: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    rows
}

fn main() {
    let _task: proxystore::Task<Vec<f64>> = scale::task("ab".to_string(), vec![1.0], 2.0);
    let _task: proxystore::Task<Vec<Vec<f64>>> = transpose::task(vec![vec![1.0]]);
}
