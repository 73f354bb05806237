use proxystore::proxied;

#[proxied]
fn describe(x: f64) -> impl std::fmt::Display {
    x
}

fn main() {
    println!("{}", describe(1.0));
}
