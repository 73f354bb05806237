use proxystore::proxied;

mod jobs {
    use proxystore::proxied;

    #[proxied(name = "jobs.shout", types = [String],)]
    pub fn shout(text: String) -> String {
        text.to_uppercase()
    }
}

#[proxied(types = [String], name = "whisper")]
fn whisper(text: String) -> String {
    text.to_lowercase()
}

fn main() {
    assert_eq!(jobs::shout::NAME, "jobs.shout");
    assert_eq!(jobs::shout::task("a".to_string()).name(), "jobs.shout");
    assert_eq!(whisper::NAME, "whisper");
    assert_eq!(whisper("A".to_string()), "a");
}
