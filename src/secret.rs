//! Credential encodings. Every buffer that holds a secret is zeroized when dropped.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

/// SASL PLAIN message (RFC 4616): empty authorization identity, user, password.
pub(crate) fn sasl_plain(user: &str, secret: &str) -> Zeroizing<Vec<u8>> {
    let mut message = Zeroizing::new(Vec::with_capacity(user.len() + secret.len() + 2));
    message.push(0);
    message.extend_from_slice(user.as_bytes());
    message.push(0);
    message.extend_from_slice(secret.as_bytes());
    message
}

/// Base64 of a secret, in a buffer that is wiped when dropped.
pub(crate) fn base64_secret(data: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(data.len().div_ceil(3) * 4));
    STANDARD.encode_string(data, &mut out);
    out
}

/// The forms a credential takes on the wire, to cut out of anything a server sends back:
/// a server that echoes a command (`BAD Unknown command: a1 AUTHENTICATE PLAIN AGJvYg...`)
/// must not put the secret into an error message or the trace.
pub(crate) struct Redactor {
    needles: Vec<Zeroizing<String>>,
}

impl Redactor {
    pub(crate) fn new(user: &str, secret: &str) -> Self {
        let mut needles = vec![
            Zeroizing::new(secret.to_owned()),
            base64_secret(secret.as_bytes()),
            base64_secret(&sasl_plain(user, secret)),
        ];
        // The IMAP quoted form; built in one buffer of its final size, so no copy is left.
        let escapes = secret.bytes().filter(|&b| b == b'"' || b == b'\\').count();
        if escapes > 0 {
            let mut escaped = Zeroizing::new(String::with_capacity(secret.len() + escapes));
            for c in secret.chars() {
                if c == '"' || c == '\\' {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            needles.push(escaped);
        }
        // Longest first, so that a longer form is not left half-cut by a shorter one.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        Redactor { needles }
    }

    pub(crate) fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), "<redacted>");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_is_rfc4616() {
        assert_eq!(&sasl_plain("bob", "pw")[..], b"\0bob\0pw");
        assert_eq!(&base64_secret(&sasl_plain("bob", "pw"))[..], "AGJvYgBwdw==");
        assert_eq!(
            &base64_secret("p\"a\\ss wörd".as_bytes())[..],
            "cCJhXHNzIHfDtnJk"
        );
    }
}
