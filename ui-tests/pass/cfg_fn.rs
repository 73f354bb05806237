use proxystore::proxied;

// `#[cfg]` below the attribute: the generated items follow the fn.
#[proxied]
#[cfg(any())]
fn absent(x: u8) -> u8 {
    x
}

#[proxied]
#[cfg(not(any()))]
fn present(x: u8) -> u8 {
    x
}

fn main() {
    assert_eq!(present(1), 1);
    let _task = present::task(1);
}
