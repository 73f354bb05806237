use proxystore::proxied;

#[proxied(types = [Vec<f64>])]
fn sorted(mut values: Vec<f64>, _: u8, #[allow(unused_mut)] mut unused: i32) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let _ = unused;
    values
}

fn main() {
    assert_eq!(sorted(vec![2.0, 1.0], 0, 0), [1.0, 2.0]);
    let _task = sorted::task(vec![2.0, 1.0], 0, 0);
}
