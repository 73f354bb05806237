use proxystore::proxied;

#[proxied]
fn stop(code: i32) -> ! {
    std::process::exit(code)
}

fn main() {
    if std::env::args().count() > 10 {
        stop(1);
    }
}
