mod jobs {
    use proxystore::proxied;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub(crate) struct Matrix {
        pub(crate) cells: Vec<f64>,
    }

    #[proxied(types = [Matrix])]
    pub(crate) fn trace(matrix: Matrix) -> f64 {
        matrix.cells.iter().sum()
    }

    pub(super) mod nested {
        use proxystore::proxied;

        #[proxied(types = [super::Matrix])]
        pub(in crate::jobs) fn first(matrix: super::Matrix) -> f64 {
            matrix.cells[0]
        }

        #[proxied]
        pub(super) fn last(matrix: self::super::Matrix) -> f64 {
            matrix.cells[matrix.cells.len() - 1]
        }
    }

    pub(crate) fn submit_first() -> proxystore::Task<f64> {
        nested::first::task(Matrix { cells: vec![1.0] })
    }

    pub(crate) fn submit_last() -> proxystore::Task<f64> {
        nested::last::task(Matrix { cells: vec![1.0] })
    }
}

fn main() {
    let _task = jobs::trace::task(jobs::Matrix { cells: vec![1.0] });
    let _task = jobs::submit_first();
    let _task = jobs::submit_last();
}
