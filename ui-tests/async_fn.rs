use proxystore::proxied;

#[proxied(types = [Vec<u8>])]
async fn download(url: String) -> Vec<u8> {
    url.into_bytes()
}

fn main() {
    let _future = download("https://example.org".to_string());
}
