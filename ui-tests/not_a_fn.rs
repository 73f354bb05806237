use proxystore::proxied;

#[proxied(types = [Vec<f64>])]
struct Matrix;

fn main() {
    let _matrix = Matrix;
}
