mod jobs {
    use proxystore::proxied;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Matrix {
        cells: Vec<f64>,
    }

    #[proxied(types = [Matrix])]
    fn trace(matrix: Matrix) -> f64 {
        matrix.cells.iter().sum()
    }

    pub fn submit() -> proxystore::Task<f64> {
        trace::task(Matrix { cells: vec![1.0] })
    }
}

fn main() {
    let _task = jobs::submit();
}
