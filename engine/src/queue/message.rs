//! SQS messages: what a body and its attributes may hold, and the MD5 digests of both that
//! `SendMessage` returns (`MD5OfMessageBody`, `MD5OfMessageAttributes`), computed exactly as
//! SQS computes them so SDKs that verify them accept shoal's.

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Most message attributes on one message.
pub const MAX_ATTRIBUTES: usize = 10;
/// Longest attribute name or data type.
pub const MAX_ATTRIBUTE_NAME_LEN: usize = 256;

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttributeValue {
    /// `StringValue`: for String and Number types (and their custom subtypes).
    String(String),
    /// `BinaryValue`: for Binary types.
    Binary(Vec<u8>),
}

/// A message attribute: a name, a data type (`String`, `Number`, `Binary`, optionally with a
/// custom suffix such as `Number.float`) and a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageAttribute {
    /// Name: 1-256 of `[A-Za-z0-9_.-]`.
    pub name: String,
    /// Data type.
    pub data_type: String,
    /// Value.
    pub value: AttributeValue,
}

impl MessageAttribute {
    /// Bytes the attribute counts against the message size limit: name, type and value.
    pub fn size(&self) -> usize {
        self.name.len()
            + self.data_type.len()
            + match &self.value {
                AttributeValue::String(s) => s.len(),
                AttributeValue::Binary(b) => b.len(),
            }
    }

    /// The base type: `String`, `Number` or `Binary`.
    pub fn base_type(&self) -> &str {
        self.data_type
            .split_once('.')
            .map_or(self.data_type.as_str(), |(base, _)| base)
    }
}

/// Longest FIFO group or deduplication id.
pub const MAX_FIFO_ID_LEN: usize = 128;

/// Checks a FIFO message group or deduplication id (`what` names which): 1 to 128 characters
/// of A-Z, a-z, 0-9 and punctuation.
pub fn validate_fifo_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_FIFO_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b.is_ascii_punctuation());
    if ok {
        Ok(())
    } else {
        invalid(format!(
            "{what} {id:?} must be 1 to {MAX_FIFO_ID_LEN} characters of A-Z a-z 0-9 and punctuation"
        ))
    }
}

fn invalid<T>(message: String) -> Result<T> {
    Err(Error::InvalidArgument(message))
}

/// True for a character SQS accepts in a message body or string value:
/// `#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF`.
pub fn allowed_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Checks a message body: not empty, only characters SQS allows.
pub fn validate_body(body: &str) -> Result<()> {
    if body.is_empty() {
        return invalid("the message body is empty".into());
    }
    // Most bodies are ASCII text: every byte from 0x20 up, tab, line feed and carriage
    // return are allowed, and checking bytes is much faster than decoding characters.
    if body
        .bytes()
        .all(|b| (0x20..0x80).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'))
    {
        return Ok(());
    }
    if let Some((i, c)) = body.char_indices().find(|(_, c)| !allowed_char(*c)) {
        return invalid(format!(
            "the message body has a character SQS does not allow ({:#x}) at byte {i}",
            u32::from(c)
        ));
    }
    Ok(())
}

fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| invalid(format!("invalid message attribute name {name:?}: {why}"));
    if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME_LEN {
        return bad("it must be 1 to 256 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return bad("only A-Z a-z 0-9 _ - . are allowed");
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return bad("it cannot start or end with a period or have two in a row");
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("aws.") || lower.starts_with("amazon.") {
        return bad("names starting with AWS. or Amazon. are reserved");
    }
    Ok(())
}

/// Checks a number value as SQS does: an optional sign, digits with at most one decimal point,
/// and at most 38 significant digits.
fn validate_number(name: &str, text: &str) -> Result<()> {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let well_formed = !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    let significant = format!("{int}{frac}");
    let significant = significant.trim_start_matches('0').trim_end_matches('0');
    if !well_formed || significant.len() > 38 {
        return invalid(format!(
            "message attribute {name:?}: {text:?} is not a number SQS accepts (digits, one optional decimal point, at most 38 significant digits)"
        ));
    }
    Ok(())
}

/// Checks a message's attributes: at most 10, valid unique names, a known base type with an
/// optional custom suffix, and a value of the kind the type needs.
pub fn validate_attributes(attributes: &[MessageAttribute]) -> Result<()> {
    if attributes.len() > MAX_ATTRIBUTES {
        return invalid(format!(
            "a message can have at most {MAX_ATTRIBUTES} attributes, not {}",
            attributes.len()
        ));
    }
    for (i, attribute) in attributes.iter().enumerate() {
        validate_name(&attribute.name)?;
        if attributes[..i].iter().any(|a| a.name == attribute.name) {
            return invalid(format!(
                "message attribute {:?} is given twice",
                attribute.name
            ));
        }
        let data_type = &attribute.data_type;
        if data_type.len() > MAX_ATTRIBUTE_NAME_LEN || !data_type.chars().all(allowed_char) {
            return invalid(format!("invalid data type {data_type:?}"));
        }
        match (attribute.base_type(), &attribute.value) {
            ("String", AttributeValue::String(s)) => {
                if let Some(c) = s.chars().find(|c| !allowed_char(*c)) {
                    return invalid(format!(
                        "message attribute {:?} has a character SQS does not allow ({:#x})",
                        attribute.name,
                        u32::from(c)
                    ));
                }
                if s.is_empty() {
                    return invalid(format!("message attribute {:?} is empty", attribute.name));
                }
            }
            ("Number", AttributeValue::String(s)) => validate_number(&attribute.name, s)?,
            ("Binary", AttributeValue::Binary(b)) => {
                if b.is_empty() {
                    return invalid(format!("message attribute {:?} is empty", attribute.name));
                }
            }
            ("String" | "Number" | "Binary", _) => {
                return invalid(format!(
                    "message attribute {:?}: a {} value must be given as {}",
                    attribute.name,
                    attribute.base_type(),
                    if attribute.base_type() == "Binary" {
                        "binary"
                    } else {
                        "a string"
                    }
                ));
            }
            (other, _) => {
                return invalid(format!(
                    "message attribute {:?}: unknown data type {other:?} (String, Number or Binary, optionally with a .suffix)",
                    attribute.name
                ));
            }
        }
    }
    Ok(())
}

/// Lowercase hex MD5 of `bytes` (`MD5OfMessageBody` of a body).
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[expect(
    clippy::big_endian_bytes,
    reason = "SQS defines the attribute digest's lengths as 4-byte big-endian"
)]
fn put_len_prefixed(hasher: &mut Md5, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    hasher.update(len.to_be_bytes());
    hasher.update(bytes);
}

/// `MD5OfMessageAttributes`, as SQS computes it: attributes sorted by name, each encoded as its
/// length-prefixed name, length-prefixed data type, a transport byte (1 for string values, 2 for
/// binary) and its length-prefixed value; the MD5 of all of it, in hex. `None` without
/// attributes (SQS returns no digest then).
pub fn md5_of_message_attributes(attributes: &[MessageAttribute]) -> Option<String> {
    if attributes.is_empty() {
        return None;
    }
    let mut sorted: Vec<&MessageAttribute> = attributes.iter().collect();
    sorted.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let mut hasher = Md5::new();
    for attribute in sorted {
        put_len_prefixed(&mut hasher, attribute.name.as_bytes());
        put_len_prefixed(&mut hasher, attribute.data_type.as_bytes());
        match &attribute.value {
            AttributeValue::String(s) => {
                hasher.update([1u8]);
                put_len_prefixed(&mut hasher, s.as_bytes());
            }
            AttributeValue::Binary(b) => {
                hasher.update([2u8]);
                put_len_prefixed(&mut hasher, b);
            }
        }
    }
    Some(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(name: &str, data_type: &str, value: &str) -> MessageAttribute {
        MessageAttribute {
            name: name.into(),
            data_type: data_type.into(),
            value: AttributeValue::String(value.into()),
        }
    }

    fn binary(name: &str, value: &[u8]) -> MessageAttribute {
        MessageAttribute {
            name: name.into(),
            data_type: "Binary".into(),
            value: AttributeValue::Binary(value.to_vec()),
        }
    }

    /// The published reference values of the algorithm.
    #[test]
    fn attribute_digests_match_the_reference_values() {
        let text = string("attribName1", "String", "attribValue 1");
        let number = string(
            "customNumberTypeAttrib",
            "Number.float",
            "4563442423554324324264524243.32543234",
        );
        let bin = binary("binaryAttribute", b"Hello binary world!");
        let md5 = |attrs: &[MessageAttribute]| md5_of_message_attributes(attrs).unwrap();
        assert_eq!(
            md5(std::slice::from_ref(&text)),
            "19e27d4e946b072f3f58da80d94fd778"
        );
        assert_eq!(
            md5(std::slice::from_ref(&number)),
            "9fe1b90bbd9965bdf77bac517c7d2495"
        );
        assert_eq!(
            md5(std::slice::from_ref(&bin)),
            "31a92b15d92f8db860eda32aceb656c3"
        );
        // Order of the input does not matter: the names are sorted.
        assert_eq!(
            md5(&[text.clone(), number.clone(), bin.clone()]),
            "c932db14a896c663f83c260297d594ff"
        );
        assert_eq!(
            md5(&[bin, text, number]),
            "c932db14a896c663f83c260297d594ff"
        );
        assert_eq!(md5_of_message_attributes(&[]), None);
    }

    #[test]
    fn body_digest_and_rules() {
        assert_eq!(md5_hex(b"hello"), "5d41402abc4b2a76b9719d911017c592");
        assert!(validate_body("tab\tnewline\ncr\r emoji \u{1F600} private \u{E000}").is_ok());
        for bad in ["", "nul\u{0}", "bell\u{7}", "\u{FFFE}", "\u{FFFF}"] {
            assert!(validate_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attribute_rules() {
        let ok = [
            string("a", "String", "x"),
            string("price.usd", "Number", "-12.50"),
            string(
                "n",
                "Number.int",
                "1234567890123456789012345678901234567800000",
            ),
            binary("blob", &[0, 255]),
            string("custom-type", "String.json", "{}"),
        ];
        validate_attributes(&ok).unwrap();
        let cases: Vec<Vec<MessageAttribute>> = vec![
            (0..11)
                .map(|i| string(&format!("a{i}"), "String", "x"))
                .collect(),
            vec![string("dup", "String", "x"), string("dup", "String", "y")],
            vec![string("", "String", "x")],
            vec![string(".lead", "String", "x")],
            vec![string("trail.", "String", "x")],
            vec![string("two..dots", "String", "x")],
            vec![string("AWS.reserved", "String", "x")],
            vec![string("amazon.reserved", "String", "x")],
            vec![string("sp ace", "String", "x")],
            vec![string(&"n".repeat(257), "String", "x")],
            vec![string("n", "Number", "12a")],
            vec![string("n", "Number", "1.2.3")],
            vec![string("n", "Number", "")],
            vec![string("n", "Number", &"9".repeat(39))],
            vec![string("n", "Text", "x")],
            vec![string("n", "Binary", "not binary")],
            vec![binary("n", b"")],
            vec![string("s", "String", "")],
            vec![string("s", "String", "bad\u{1}")],
        ];
        for case in cases {
            assert!(validate_attributes(&case).is_err(), "{case:?}");
        }
    }
}
