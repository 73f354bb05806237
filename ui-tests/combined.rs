use proxystore::proxied;

// Every mistake is reported in one build.
#[proxied(types = [Vec<f64>], name = "")]
async fn summary<'a>(name: &'a str, (min, max): (f64, f64)) -> impl std::fmt::Display + 'a {
    format!("{name}: {min}..{max}")
}

fn main() {
    let _future = summary("x", (0.0, 1.0));
}
