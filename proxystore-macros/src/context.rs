//! Where the attribute sits: `#[proxied]` on an associated function (inside
//! an `impl` or `trait` block) cannot work, since the task module and its
//! registration must live at module level. The attribute only sees the fn,
//! so this reads the source file around it to tell, and the expansion then
//! says what to do instead of rustc's generic "not supported in `impl`s".

use std::path::Path;

/// Whether `ident` (the fn's name) sits directly inside an `impl` or
/// `trait` block of its source file. `None` when that cannot be told (no
/// file: generated code, or outside a compiler).
pub(crate) fn enclosing_block(ident: &syn::Ident) -> Option<&'static str> {
    if !proc_macro::is_available() {
        return None;
    }
    let span = ident.span().unwrap();
    let line = span.line();
    let path = span.local_file()?;
    enclosing_block_in(&path, line)
}

fn enclosing_block_in(path: &Path, line: usize) -> Option<&'static str> {
    let text = std::fs::read_to_string(path).ok()?;
    // Module-level items start at column 0 (rustfmt's layout): only an
    // indented fn can be inside a block worth looking at.
    let fn_line = text.lines().nth(line.checked_sub(1)?)?;
    if !fn_line.starts_with(char::is_whitespace) {
        return None;
    }
    // Whole lines, line ends included (`\r\n` too).
    let offset: usize = text
        .split_inclusive('\n')
        .take(line - 1)
        .map(str::len)
        .sum();
    innermost_block(text.get(..offset)?)
}

/// The kind of the innermost block still open at the end of `prefix`:
/// `"impl"`, `"trait"`, or `None` for anything else (a module, a fn body).
fn innermost_block(prefix: &str) -> Option<&'static str> {
    let bytes = prefix.as_bytes();
    let mut headers: Vec<String> = Vec::new();
    let mut header = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'r' if matches!(bytes.get(i + 1), Some(b'#') | Some(b'"'))
                && raw_prefix_starts(bytes, i) =>
            {
                let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
                if bytes.get(i + 1 + hashes) == Some(&b'"') {
                    let mut end = b"\"".to_vec();
                    end.extend(std::iter::repeat_n(b'#', hashes));
                    i += 2 + hashes;
                    while i < bytes.len() && !bytes[i..].starts_with(&end) {
                        i += 1;
                    }
                    i += end.len();
                    continue;
                }
                header.push('r');
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}'), not a lifetime.
                if bytes.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while i < bytes.len() && bytes[i] != b'\'' {
                        i += 1;
                    }
                } else if bytes.get(i + 2) == Some(&b'\'') {
                    i += 2;
                } else {
                    header.push('\'');
                }
            }
            b'{' => {
                headers.push(std::mem::take(&mut header));
            }
            b'}' => {
                headers.pop();
                header.clear();
            }
            b';' => header.clear(),
            _ => header.push(c as char),
        }
        i += 1;
    }
    let header = headers.pop()?;
    kind_of(&header)
}

/// Whether the `r` at `i` starts a raw string literal (`r"`, `r#"`), or
/// ends the prefix of a raw byte or C string (`br"`, `cr#"`): not the end
/// of an identifier.
fn raw_prefix_starts(bytes: &[u8], i: usize) -> bool {
    let ident = |at: Option<&u8>| at.is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_');
    let before = i.checked_sub(1).map(|j| &bytes[j]);
    match before {
        Some(b'b' | b'c') => !ident(i.checked_sub(2).map(|j| &bytes[j])),
        other => !ident(other),
    }
}

/// `"impl"` or `"trait"` if `header` (what precedes a `{`) opens such a
/// block.
fn kind_of(header: &str) -> Option<&'static str> {
    // Attributes first, then qualifiers.
    let mut rest = header.trim();
    while let Some(after) = rest.strip_prefix("#") {
        let close = after.find(']')?;
        rest = after[close + 1..].trim_start();
    }
    let words = rest
        .split(|c: char| c.is_whitespace() || c == '<')
        .filter(|w| !w.is_empty());
    for word in words {
        match word {
            "pub" | "unsafe" | "default" | "auto" => continue,
            w if w.starts_with("pub(") => continue,
            "impl" => return Some("impl"),
            "trait" => return Some("trait"),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_told_apart() {
        let cases = [
            ("impl Model {\n", Some("impl")),
            ("impl<T: Clone> Model<T> {\n", Some("impl")),
            ("#[cfg(test)] unsafe impl Send for X {\n", Some("impl")),
            ("pub trait Scale {\n", Some("trait")),
            ("pub(crate) mod inner {\n", None),
            ("fn outer() {\n", None),
            ("impl A { fn x() {} }\nmod m {\n", None),
            (
                "impl A {\n // a } in a comment\n /* { */ let s = \"}\"; let c = '}';\n",
                Some("impl"),
            ),
            ("impl A {\n fn f<'a>(x: &'a str) {}\n", Some("impl")),
            ("impl A {\n const S: &[u8] = br#\"}\"#;\n", Some("impl")),
            ("mod m {\n const S: &str = r\"{\";\n", None),
            ("impl A {\r\n}\r\nmod tests {\r\n", None),
            ("", None),
        ];
        for (prefix, expected) in cases {
            assert_eq!(innermost_block(prefix), expected, "{prefix:?}");
        }
    }

    #[test]
    fn windows_line_ends_count_whole() {
        let dir = std::env::temp_dir().join(format!("proxied-crlf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("lib.rs");
        let source = "impl A {\r\n    fn a() {}\r\n}\r\nmod tests {\r\n    fn f() {}\r\n}\r\n";
        std::fs::write(&file, source).unwrap();
        assert_eq!(enclosing_block_in(&file, 5), None, "inside `mod tests`");
        assert_eq!(enclosing_block_in(&file, 2), Some("impl"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
