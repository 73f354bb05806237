use proxystore::proxied;

struct Matrix {
    cells: Vec<f64>,
}

#[proxied(types = [Matrix])]
fn trace(matrix: Matrix) -> f64 {
    matrix.cells.iter().sum()
}

fn main() {
    assert_eq!(trace(Matrix { cells: vec![1.0] }), 1.0);
}
