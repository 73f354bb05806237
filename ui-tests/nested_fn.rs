use proxystore::proxied;

fn main() {
    #[proxied]
    fn double(x: i64) -> i64 {
        x * 2
    }

    assert_eq!(double(2), 4);
}
