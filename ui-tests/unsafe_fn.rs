use proxystore::proxied;

#[proxied]
unsafe fn first(values: Vec<u64>) -> u64 {
    *values.get_unchecked(0)
}

fn main() {
    assert_eq!(unsafe { first(vec![7]) }, 7);
}
