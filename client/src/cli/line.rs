//! Splitting a command line into words, shell style, for `txn` and `shell`.

/// Splits `line` on whitespace; `'...'` quotes literally, `"..."` quotes with
/// backslash escapes (`\"`, `\\`, `\n`, `\t`), and a backslash outside quotes
/// escapes the next character. `""` is an empty word.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Whether a word has started (so that `""` yields an empty word).
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => word.push('\n'),
                            Some('t') => word.push('\t'),
                            Some(c) => word.push(c),
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_words(line).expect("valid line")
    }

    #[test]
    fn splits_on_whitespace_and_honours_quotes() {
        assert_eq!(words("  put  k   v "), ["put", "k", "v"]);
        assert_eq!(words("put k 'two words'"), ["put", "k", "two words"]);
        assert_eq!(
            words(r#"put k "say \"hi\"\n""#),
            ["put", "k", "say \"hi\"\n"]
        );
        assert_eq!(words(r"put k a\ b"), ["put", "k", "a b"]);
        assert_eq!(words(r#"put k """#), ["put", "k", ""]);
        assert_eq!(words("put k=v"), ["put", "k=v"]);
        assert!(words("   ").is_empty());
    }

    #[test]
    fn rejects_unterminated_quotes() {
        assert!(split_words("put k 'v").is_err());
        assert!(split_words("put k \"v").is_err());
        assert!(split_words("put k v\\").is_err());
    }
}
