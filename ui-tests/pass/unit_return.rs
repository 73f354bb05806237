use proxystore::proxied;

#[proxied]
fn log(message: String) {
    eprintln!("{message}");
}

#[proxied]
fn tick() -> () {}

#[proxied]
fn nothing() {}

fn main() {
    let _task: proxystore::Task<()> = log::task("hello".to_string());
    let _task: proxystore::Task<()> = tick::task();
    let _task: proxystore::Task<()> = nothing::task();
    tick();
}
