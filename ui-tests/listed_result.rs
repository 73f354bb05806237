use proxystore::proxied;

#[proxied(types = [Result<Vec<u8>, std::io::Error>])]
fn load(path: String) -> Result<Vec<u8>, std::io::Error> {
    std::fs::read(path)
}

fn main() {
    assert!(load("/nonexistent".to_string()).is_err());
}
