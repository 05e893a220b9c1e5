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
