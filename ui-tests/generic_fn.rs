use proxystore::proxied;

#[proxied]
fn largest<T: PartialOrd + Copy>(values: Vec<T>) -> Option<T> {
    values.into_iter().reduce(|a, b| if b > a { b } else { a })
}

fn main() {
    assert_eq!(largest(vec![1, 3, 2]), Some(3));
    let _task = largest::task(vec![1, 3, 2]);
}
