//! Subscription filter policies with SNS's semantics.
//!
//! A policy is a JSON object. Each key names a message attribute (scope
//! [`FilterScope::Attributes`], the default) or a property of the JSON message body (scope
//! [`FilterScope::Body`], where a key's value may itself be an object: a nested policy for
//! the nested property). A key's value is a list of conditions; a key matches when at least
//! one condition matches one of its values (OR within a key), and the policy matches when
//! every key matches (AND across keys). A `"$or"` key whose value is a list of at least two
//! objects matches when one of those policies does.
//!
//! Conditions: an exact string, number, `true`, `false` or `null`; `{"prefix": S}`,
//! `{"suffix": S}`, `{"equals-ignore-case": S}`; `{"anything-but": V | [V...] | {"prefix": S} |
//! {"suffix": S} | {"equals-ignore-case": S | [S...]}}`; `{"numeric": [OP, N]}` or
//! `{"numeric": [">" | ">=", N, "<" | "<=", M]}` with `OP` one of `= < <= > >=`;
//! `{"exists": true | false}`.
//!
//! Values: a `String` attribute is a string, a `Number` attribute a number, a `String.Array`
//! attribute each element of its JSON array; `Binary` attributes are not looked at. In the
//! body, an array property stands for each of its elements. Strings compare case-sensitively
//! except under `equals-ignore-case`; numbers compare as numbers (`301.5` equals `3.015e2`),
//! never with strings.
//!
//! Limits as SNS has them: numbers from -10^9 to 10^9, at most 5 keys on any one AND-branch,
//! at most 150 value combinations, at most 256 KiB of JSON.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::queue::{AttributeValue, MessageAttribute};

/// Largest policy, as JSON text.
pub const MAX_POLICY_BYTES: usize = 256 << 10;
/// Most keys on one AND-branch of a policy.
pub const MAX_KEYS: usize = 5;
/// Most value combinations (the product of the lengths of the value lists).
pub const MAX_COMBINATIONS: u64 = 150;
/// Largest magnitude of a number in a policy.
pub const MAX_NUMBER: f64 = 1e9;

/// What a filter policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FilterScope {
    /// The message attributes (SNS's `MessageAttributes`, the default).
    #[default]
    Attributes,
    /// The message body, which must be a JSON object (SNS's `MessageBody`).
    Body,
}

/// A parsed filter policy.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPolicy {
    scope: FilterScope,
    root: Policy,
}

#[derive(Debug, Clone, PartialEq)]
struct Policy {
    keys: Vec<(String, Node)>,
    /// Each group: one of its policies must match.
    ors: Vec<Vec<Policy>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf(Vec<Condition>),
    Nested(Policy),
}

#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Exact(Scalar),
    Prefix(String),
    Suffix(String),
    EqualsIgnoreCase(String),
    AnythingBut(Vec<Scalar>),
    AnythingButPrefix(String),
    AnythingButSuffix(String),
    AnythingButIgnoreCase(Vec<String>),
    Numeric(Vec<(Op, f64)>),
    Exists(bool),
}

fn bad<T>(why: impl std::fmt::Display) -> Result<T> {
    Err(Error::InvalidArgument(format!(
        "invalid filter policy: {why}"
    )))
}

impl FilterPolicy {
    /// Parses and checks a policy; every problem is an [`Error::InvalidArgument`] naming it.
    pub fn parse(json: &str, scope: FilterScope) -> Result<FilterPolicy> {
        if json.len() > MAX_POLICY_BYTES {
            return bad(format!(
                "it is {} bytes, more than {MAX_POLICY_BYTES}",
                json.len()
            ));
        }
        let value: Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => return bad(format!("not JSON ({e})")),
        };
        let Value::Object(map) = value else {
            return bad("it must be a JSON object");
        };
        let root = parse_policy(&map, scope, "")?;
        let keys = root.key_count();
        if keys > MAX_KEYS {
            return bad(format!(
                "it has {keys} keys on one branch, more than {MAX_KEYS}"
            ));
        }
        let combinations = root.combinations();
        if combinations > MAX_COMBINATIONS {
            return bad(format!(
                "it has {combinations} value combinations, more than {MAX_COMBINATIONS}"
            ));
        }
        Ok(FilterPolicy { scope, root })
    }

    /// The scope the policy was parsed for.
    pub fn scope(&self) -> FilterScope {
        self.scope
    }

    /// True when a message with these attributes and this body passes the policy.
    pub fn matches(&self, attributes: &[MessageAttribute], body: &str) -> bool {
        match self.scope {
            FilterScope::Attributes => {
                let values: Vec<(&str, Vec<Scalar>)> = attributes
                    .iter()
                    .filter_map(|a| attribute_values(a).map(|v| (a.name.as_str(), v)))
                    .collect();
                self.root.matches_attributes(&values)
            }
            FilterScope::Body => match serde_json::from_str::<Value>(body) {
                Ok(Value::Object(map)) => self.root.matches_body(&map),
                _ => false,
            },
        }
    }
}

/// The values an attribute stands for; `None` for types policies do not look at.
fn attribute_values(a: &MessageAttribute) -> Option<Vec<Scalar>> {
    let AttributeValue::String(text) = &a.value else {
        return None;
    };
    if a.data_type == "String.Array" {
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
            return Some(Vec::new());
        };
        return Some(items.iter().filter_map(scalar_of).collect());
    }
    match a.base_type() {
        "String" => Some(vec![Scalar::Str(text.clone())]),
        "Number" => text
            .trim()
            .parse::<f64>()
            .ok()
            .map(|n| vec![Scalar::Num(n)]),
        _ => None,
    }
}

fn scalar_of(v: &Value) -> Option<Scalar> {
    match v {
        Value::String(s) => Some(Scalar::Str(s.clone())),
        Value::Number(n) => n.as_f64().map(Scalar::Num),
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        Value::Null => Some(Scalar::Null),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// The scalars a body property stands for: itself, or each element of an array (flattened).
fn body_values(v: &Value, out: &mut Vec<Scalar>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| body_values(i, out)),
        other => out.extend(scalar_of(other)),
    }
}

fn parse_policy(map: &Map<String, Value>, scope: FilterScope, path: &str) -> Result<Policy> {
    if map.is_empty() && !path.is_empty() {
        return bad(format!("key {path:?} has an empty object"));
    }
    let mut policy = Policy {
        keys: Vec::new(),
        ors: Vec::new(),
    };
    for (key, value) in map {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if key == "$or"
            && let Value::Array(items) = value
            && items.len() >= 2
            && items.iter().all(Value::is_object)
        {
            let mut group = Vec::with_capacity(items.len());
            for item in items {
                if let Value::Object(branch) = item {
                    if branch.is_empty() {
                        return bad("a $or branch is an empty object");
                    }
                    group.push(parse_policy(branch, scope, path)?);
                }
            }
            policy.ors.push(group);
            continue;
        }
        let node = match value {
            Value::Array(items) => Node::Leaf(parse_conditions(items, &here)?),
            Value::Object(nested) => {
                if scope == FilterScope::Attributes {
                    return bad(format!(
                        "key {here:?} holds an object: nested policies need --filter-scope body"
                    ));
                }
                Node::Nested(parse_policy(nested, scope, &here)?)
            }
            _ => {
                return bad(format!(
                    "the value of key {here:?} must be a list of conditions (or, for the body, an object)"
                ));
            }
        };
        policy.keys.push((key.clone(), node));
    }
    Ok(policy)
}

fn number(v: &Value, key: &str) -> Result<f64> {
    match v.as_f64() {
        Some(n) if n.abs() <= MAX_NUMBER => Ok(n),
        Some(n) => bad(format!(
            "key {key:?}: {n} is outside -1e9 to 1e9 (SNS's numeric range)"
        )),
        None => bad(format!("key {key:?}: {v} is not a number")),
    }
}

fn string<'a>(v: &'a Value, key: &str, op: &str) -> Result<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        _ => bad(format!("key {key:?}: {op} takes a string, not {v}")),
    }
}

fn exact(v: &Value, key: &str) -> Result<Scalar> {
    match v {
        Value::Number(_) => Ok(Scalar::Num(number(v, key)?)),
        other => scalar_of(other).map_or_else(
            || bad(format!("key {key:?}: {v} is not a value to match")),
            Ok,
        ),
    }
}

fn parse_conditions(items: &[Value], key: &str) -> Result<Vec<Condition>> {
    if items.is_empty() {
        return bad(format!("key {key:?} has an empty list"));
    }
    items
        .iter()
        .map(|item| parse_condition(item, key))
        .collect()
}

fn parse_condition(item: &Value, key: &str) -> Result<Condition> {
    let Value::Object(map) = item else {
        if item.is_array() {
            return bad(format!("key {key:?}: a list inside a list of conditions"));
        }
        return Ok(Condition::Exact(exact(item, key)?));
    };
    let mut entries = map.iter();
    let (Some((op, arg)), None) = (entries.next(), entries.next()) else {
        return bad(format!(
            "key {key:?}: a condition object must have exactly one operator"
        ));
    };
    match op.as_str() {
        "prefix" => Ok(Condition::Prefix(string(arg, key, op)?.to_string())),
        "suffix" => Ok(Condition::Suffix(string(arg, key, op)?.to_string())),
        "equals-ignore-case" => Ok(Condition::EqualsIgnoreCase(
            string(arg, key, op)?.to_string(),
        )),
        "exists" => match arg {
            Value::Bool(b) => Ok(Condition::Exists(*b)),
            _ => bad(format!("key {key:?}: exists takes true or false")),
        },
        "numeric" => parse_numeric(arg, key),
        "anything-but" => parse_anything_but(arg, key),
        other => bad(format!("key {key:?}: unknown operator {other:?}")),
    }
}

fn parse_anything_but(arg: &Value, key: &str) -> Result<Condition> {
    match arg {
        Value::Array(items) => {
            if items.is_empty() {
                return bad(format!("key {key:?}: anything-but has an empty list"));
            }
            let values = items
                .iter()
                .map(|v| match v {
                    Value::String(_) | Value::Number(_) => exact(v, key),
                    _ => bad(format!(
                        "key {key:?}: anything-but lists strings or numbers, not {v}"
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Condition::AnythingBut(values))
        }
        Value::String(_) | Value::Number(_) => Ok(Condition::AnythingBut(vec![exact(arg, key)?])),
        Value::Object(map) => {
            let mut entries = map.iter();
            let (Some((op, inner)), None) = (entries.next(), entries.next()) else {
                return bad(format!(
                    "key {key:?}: anything-but takes one operator (prefix, suffix or equals-ignore-case)"
                ));
            };
            match op.as_str() {
                "prefix" => Ok(Condition::AnythingButPrefix(
                    string(inner, key, "anything-but prefix")?.to_string(),
                )),
                "suffix" => Ok(Condition::AnythingButSuffix(
                    string(inner, key, "anything-but suffix")?.to_string(),
                )),
                "equals-ignore-case" => {
                    let list = match inner {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(items) if !items.is_empty() => items
                            .iter()
                            .map(|v| {
                                string(v, key, "anything-but equals-ignore-case")
                                    .map(str::to_string)
                            })
                            .collect::<Result<Vec<_>>>()?,
                        _ => {
                            return bad(format!(
                                "key {key:?}: anything-but equals-ignore-case takes a string or a list of strings"
                            ));
                        }
                    };
                    Ok(Condition::AnythingButIgnoreCase(list))
                }
                other => bad(format!(
                    "key {key:?}: anything-but does not take {other:?} (prefix, suffix or equals-ignore-case)"
                )),
            }
        }
        other => bad(format!(
            "key {key:?}: anything-but takes a value, a list or an operator object, not {other}"
        )),
    }
}

fn parse_numeric(arg: &Value, key: &str) -> Result<Condition> {
    let Value::Array(items) = arg else {
        return bad(format!(
            "key {key:?}: numeric takes a list like [\">\", 0, \"<=\", 5]"
        ));
    };
    let op = |v: &Value| -> Result<Op> {
        match v.as_str() {
            Some("=") => Ok(Op::Eq),
            Some("<") => Ok(Op::Lt),
            Some("<=") => Ok(Op::Le),
            Some(">") => Ok(Op::Gt),
            Some(">=") => Ok(Op::Ge),
            _ => bad(format!(
                "key {key:?}: {v} is not a numeric operator (= < <= > >=)"
            )),
        }
    };
    match items.as_slice() {
        [o, n] => Ok(Condition::Numeric(vec![(op(o)?, number(n, key)?)])),
        [o1, n1, o2, n2] => {
            let (low, high) = ((op(o1)?, number(n1, key)?), (op(o2)?, number(n2, key)?));
            if !matches!(low.0, Op::Gt | Op::Ge) || !matches!(high.0, Op::Lt | Op::Le) {
                return bad(format!(
                    "key {key:?}: a numeric range is a lower bound (> or >=) then an upper bound (< or <=)"
                ));
            }
            if low.1 >= high.1 {
                return bad(format!(
                    "key {key:?}: the numeric range's lower bound must be below its upper bound"
                ));
            }
            Ok(Condition::Numeric(vec![low, high]))
        }
        _ => bad(format!(
            "key {key:?}: numeric takes [OP, N] or [>|>=, N, <|<=, M]"
        )),
    }
}

fn num_eq(a: f64, b: f64) -> bool {
    // SNS compares numbers to five decimal places.
    (a - b).abs() < 0.000_005
}

fn scalar_eq(a: &Scalar, b: &Scalar) -> bool {
    match (a, b) {
        (Scalar::Num(x), Scalar::Num(y)) => num_eq(*x, *y),
        _ => a == b,
    }
}

impl Condition {
    /// Whether the condition holds for a key with these values (`None`: the key is absent).
    /// `any_present`: whether the message has any value at this level at all.
    fn holds(&self, values: Option<&[Scalar]>, any_present: bool) -> bool {
        match self {
            Condition::Exists(true) => values.is_some_and(|v| v.iter().any(|s| *s != Scalar::Null)),
            Condition::Exists(false) => values.is_none() && any_present,
            _ => values.is_some_and(|v| v.iter().any(|s| self.holds_for(s))),
        }
    }

    fn holds_for(&self, value: &Scalar) -> bool {
        let text = match value {
            Scalar::Str(s) => Some(s.as_str()),
            _ => None,
        };
        match self {
            Condition::Exact(want) => scalar_eq(want, value),
            Condition::Prefix(p) => text.is_some_and(|t| t.starts_with(p.as_str())),
            Condition::Suffix(s) => text.is_some_and(|t| t.ends_with(s.as_str())),
            Condition::EqualsIgnoreCase(s) => {
                text.is_some_and(|t| t.to_lowercase() == s.to_lowercase())
            }
            Condition::AnythingBut(list) => !list.iter().any(|l| scalar_eq(l, value)),
            Condition::AnythingButPrefix(p) => text.is_some_and(|t| !t.starts_with(p.as_str())),
            Condition::AnythingButSuffix(s) => text.is_some_and(|t| !t.ends_with(s.as_str())),
            Condition::AnythingButIgnoreCase(list) => text.is_some_and(|t| {
                let t = t.to_lowercase();
                !list.iter().any(|l| l.to_lowercase() == t)
            }),
            Condition::Numeric(bounds) => match value {
                Scalar::Num(n) => bounds.iter().all(|(op, b)| match op {
                    Op::Eq => num_eq(*n, *b),
                    Op::Lt => *n < *b,
                    Op::Le => *n <= *b,
                    Op::Gt => *n > *b,
                    Op::Ge => *n >= *b,
                }),
                _ => false,
            },
            Condition::Exists(_) => false,
        }
    }
}

impl Policy {
    fn key_count(&self) -> usize {
        let own: usize = self
            .keys
            .iter()
            .map(|(_, node)| match node {
                Node::Leaf(_) => 1,
                Node::Nested(p) => p.key_count(),
            })
            .sum();
        own + self
            .ors
            .iter()
            .map(|group| group.iter().map(Policy::key_count).max().unwrap_or(0))
            .sum::<usize>()
    }

    fn combinations(&self) -> u64 {
        let mut total: u64 = 1;
        for (_, node) in &self.keys {
            let n = match node {
                Node::Leaf(conditions) => conditions.len() as u64,
                Node::Nested(p) => p.combinations(),
            };
            total = total.saturating_mul(n);
        }
        for group in &self.ors {
            let sum = group
                .iter()
                .map(Policy::combinations)
                .fold(0u64, u64::saturating_add);
            total = total.saturating_mul(sum);
        }
        total
    }

    fn matches_attributes(&self, values: &[(&str, Vec<Scalar>)]) -> bool {
        let any_present = !values.is_empty();
        let keys_match = self.keys.iter().all(|(key, node)| match node {
            Node::Leaf(conditions) => {
                let found = values
                    .iter()
                    .find(|(name, _)| name == key)
                    .map(|(_, v)| v.as_slice());
                conditions.iter().any(|c| c.holds(found, any_present))
            }
            Node::Nested(_) => false,
        });
        keys_match
            && self
                .ors
                .iter()
                .all(|group| group.iter().any(|p| p.matches_attributes(values)))
    }

    fn matches_body(&self, object: &Map<String, Value>) -> bool {
        let any_present = !object.is_empty();
        let keys_match = self.keys.iter().all(|(key, node)| {
            let child = object.get(key);
            match node {
                Node::Leaf(conditions) => {
                    let found = child.map(|v| {
                        let mut out = Vec::new();
                        body_values(v, &mut out);
                        out
                    });
                    conditions
                        .iter()
                        .any(|c| c.holds(found.as_deref(), any_present))
                }
                Node::Nested(p) => match child {
                    Some(Value::Object(inner)) => p.matches_body(inner),
                    Some(Value::Array(items)) => items
                        .iter()
                        .any(|i| matches!(i, Value::Object(inner) if p.matches_body(inner))),
                    // An absent object: only exists-false conditions can hold below it.
                    _ => p.only_absence(),
                },
            }
        });
        keys_match
            && self
                .ors
                .iter()
                .all(|group| group.iter().any(|p| p.matches_body(object)))
    }

    /// True when every leaf condition of the policy is `exists: false`.
    fn only_absence(&self) -> bool {
        self.keys.iter().all(|(_, node)| match node {
            Node::Leaf(conditions) => conditions.iter().all(|c| *c == Condition::Exists(false)),
            Node::Nested(p) => p.only_absence(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use super::*;

    fn s(name: &str, value: &str) -> MessageAttribute {
        MessageAttribute {
            name: name.into(),
            data_type: "String".into(),
            value: AttributeValue::String(value.into()),
        }
    }

    fn n(name: &str, value: &str) -> MessageAttribute {
        MessageAttribute {
            name: name.into(),
            data_type: "Number".into(),
            value: AttributeValue::String(value.into()),
        }
    }

    fn array(name: &str, value: &str) -> MessageAttribute {
        MessageAttribute {
            name: name.into(),
            data_type: "String.Array".into(),
            value: AttributeValue::String(value.into()),
        }
    }

    fn attrs(policy: &str, attributes: &[MessageAttribute]) -> bool {
        FilterPolicy::parse(policy, FilterScope::Attributes)
            .unwrap()
            .matches(attributes, "x")
    }

    fn body(policy: &str, body: &str) -> bool {
        FilterPolicy::parse(policy, FilterScope::Body)
            .unwrap()
            .matches(&[], body)
    }

    #[test]
    fn attribute_policies_table() {
        let interests = r#"{"customer_interests": ["rugby", "tennis"]}"#;
        let price_range = r#"{"price_usd": [{"numeric": [">", 0, "<=", 150]}]}"#;
        let cases: &[(&str, &[MessageAttribute], bool)] = &[
            // Exact strings, OR within a key.
            (interests, &[s("customer_interests", "rugby")], true),
            (interests, &[s("customer_interests", "tennis")], true),
            (interests, &[s("customer_interests", "baseball")], false),
            (interests, &[s("customer_interests", "Rugby")], false),
            (
                interests,
                &[array("customer_interests", r#"["rugby", "tennis"]"#)],
                true,
            ),
            (
                interests,
                &[array("customer_interests", r#"["baseball"]"#)],
                false,
            ),
            (interests, &[s("other", "rugby")], false),
            (interests, &[], false),
            // A string never equals a number.
            (r#"{"a": ["5"]}"#, &[n("a", "5")], false),
            (r#"{"a": [5]}"#, &[n("a", "5")], true),
            (r#"{"a": [5]}"#, &[s("a", "5")], false),
            // Numbers compare as numbers.
            (
                r#"{"price_usd": [{"numeric": ["=", 301.5]}]}"#,
                &[n("price_usd", "301.5")],
                true,
            ),
            (
                r#"{"price_usd": [{"numeric": ["=", 301.5]}]}"#,
                &[n("price_usd", "301.50")],
                true,
            ),
            (
                r#"{"price_usd": [301.5]}"#,
                &[n("price_usd", "301.500")],
                true,
            ),
            (price_range, &[n("price_usd", "150")], true),
            (price_range, &[n("price_usd", "0")], false),
            (price_range, &[n("price_usd", "150.01")], false),
            (price_range, &[n("price_usd", "0.5")], true),
            (price_range, &[s("price_usd", "5")], false),
            (r#"{"p": [{"numeric": ["<", 0]}]}"#, &[n("p", "-1")], true),
            (r#"{"p": [{"numeric": ["<", 0]}]}"#, &[n("p", "0")], false),
            (r#"{"p": [{"numeric": [">=", 10]}]}"#, &[n("p", "10")], true),
            // anything-but: value, list, prefix, suffix, ignoring case.
            (
                r#"{"price": [{"anything-but": [100, 500]}]}"#,
                &[n("price", "101")],
                true,
            ),
            (
                r#"{"price": [{"anything-but": [100, 500]}]}"#,
                &[n("price", "100.1")],
                true,
            ),
            (
                r#"{"price": [{"anything-but": [100, 500]}]}"#,
                &[n("price", "100")],
                false,
            ),
            (r#"{"price": [{"anything-but": [100, 500]}]}"#, &[], false),
            (
                r#"{"c": [{"anything-but": ["rugby", "tennis"]}]}"#,
                &[s("c", "baseball")],
                true,
            ),
            (
                r#"{"c": [{"anything-but": ["rugby", "tennis"]}]}"#,
                &[s("c", "rugby")],
                false,
            ),
            (
                r#"{"c": [{"anything-but": ["rugby", "tennis"]}]}"#,
                &[array("c", r#"["rugby", "baseball"]"#)],
                true,
            ),
            (
                r#"{"c": [{"anything-but": ["rugby", "tennis"]}]}"#,
                &[array("c", r#"["rugby", "tennis"]"#)],
                false,
            ),
            (
                r#"{"c": [{"anything-but": "rugby"}]}"#,
                &[s("c", "chess")],
                true,
            ),
            (
                r#"{"e": [{"anything-but": {"prefix": "order-"}}]}"#,
                &[s("e", "order-cancelled")],
                false,
            ),
            (
                r#"{"e": [{"anything-but": {"prefix": "order-"}}]}"#,
                &[s("e", "payment")],
                true,
            ),
            (
                r#"{"e": [{"anything-but": {"suffix": ".png"}}]}"#,
                &[s("e", "a.png")],
                false,
            ),
            (
                r#"{"e": [{"anything-but": {"suffix": ".png"}}]}"#,
                &[s("e", "a.jpg")],
                true,
            ),
            (
                r#"{"e": [{"anything-but": {"equals-ignore-case": ["Red", "BLUE"]}}]}"#,
                &[s("e", "blue")],
                false,
            ),
            (
                r#"{"e": [{"anything-but": {"equals-ignore-case": ["Red", "BLUE"]}}]}"#,
                &[s("e", "green")],
                true,
            ),
            // prefix, suffix, equals-ignore-case.
            (r#"{"c": [{"prefix": "bas"}]}"#, &[s("c", "baseball")], true),
            (r#"{"c": [{"prefix": "bas"}]}"#, &[s("c", "rugby")], false),
            (
                r#"{"f": [{"suffix": ".png"}]}"#,
                &[s("f", "photo.png")],
                true,
            ),
            (
                r#"{"f": [{"suffix": ".png"}]}"#,
                &[s("f", "photo.jpg")],
                false,
            ),
            (
                r#"{"c": [{"equals-ignore-case": "tennis"}]}"#,
                &[s("c", "TeNnIs")],
                true,
            ),
            (
                r#"{"c": [{"equals-ignore-case": "tennis"}]}"#,
                &[s("c", "rugby")],
                false,
            ),
            // exists.
            (
                r#"{"store": [{"exists": true}]}"#,
                &[s("store", "fans")],
                true,
            ),
            (
                r#"{"store": [{"exists": true}]}"#,
                &[s("other", "x")],
                false,
            ),
            (
                r#"{"store": [{"exists": false}]}"#,
                &[s("other", "x")],
                true,
            ),
            (
                r#"{"store": [{"exists": false}]}"#,
                &[s("store", "fans")],
                false,
            ),
            (r#"{"store": [{"exists": false}]}"#, &[], false),
            // AND across keys.
            (
                r#"{"customer_interests": ["rugby"], "price_usd": [{"numeric": [">", 100]}]}"#,
                &[s("customer_interests", "rugby"), n("price_usd", "101")],
                true,
            ),
            (
                r#"{"customer_interests": ["rugby"], "price_usd": [{"numeric": [">", 100]}]}"#,
                &[s("customer_interests", "rugby"), n("price_usd", "99")],
                false,
            ),
            // $or.
            (
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]}"#,
                &[s("source", "aws.cloudwatch"), s("namespace", "AWS/EC2")],
                true,
            ),
            (
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]}"#,
                &[s("source", "aws.cloudwatch"), s("namespace", "AWS/S3")],
                false,
            ),
            (
                r#"{"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]}"#,
                &[s("source", "other"), s("metricName", "CPUUtilization")],
                false,
            ),
            // "$or" that is not a list of two or more objects is an ordinary key.
            (r#"{"$or": ["x"]}"#, &[s("$or", "x")], true),
            // Binary attributes are not looked at.
            (
                r#"{"b": [{"exists": true}]}"#,
                &[MessageAttribute {
                    name: "b".into(),
                    data_type: "Binary".into(),
                    value: AttributeValue::Binary(vec![1]),
                }],
                false,
            ),
        ];
        for (i, (policy, attributes, want)) in cases.iter().enumerate() {
            assert_eq!(attrs(policy, attributes), *want, "case {i}: {policy}");
        }
    }

    #[test]
    fn body_policies_table() {
        let nested = r#"{"store": {"city": ["Paris"], "open": [true]}}"#;
        let cases: &[(&str, &str, bool)] = &[
            (
                r#"{"customer_interests": ["rugby"]}"#,
                r#"{"customer_interests": "rugby"}"#,
                true,
            ),
            (
                r#"{"customer_interests": ["rugby"]}"#,
                r#"{"customer_interests": ["soccer", "rugby"]}"#,
                true,
            ),
            (
                r#"{"customer_interests": ["rugby"]}"#,
                r#"{"customer_interests": "baseball"}"#,
                false,
            ),
            (
                r#"{"price_usd": [{"numeric": ["=", 301.5]}]}"#,
                r#"{"price_usd": 3.015e2}"#,
                true,
            ),
            (
                r#"{"price_usd": [{"numeric": ["=", 301.5]}]}"#,
                r#"{"price_usd": "301.5"}"#,
                false,
            ),
            (
                r#"{"price": [{"anything-but": [100, 500]}]}"#,
                r#"{"price": [100, 50]}"#,
                true,
            ),
            (
                r#"{"price": [{"anything-but": [100, 500]}]}"#,
                r#"{"price": 100}"#,
                false,
            ),
            (
                nested,
                r#"{"store": {"city": "Paris", "open": true}}"#,
                true,
            ),
            (
                nested,
                r#"{"store": {"city": "Paris", "open": false}}"#,
                false,
            ),
            (
                nested,
                r#"{"store": {"city": "Lyon", "open": true}}"#,
                false,
            ),
            (nested, r#"{"store": "Paris"}"#, false),
            (nested, r#"{"other": 1}"#, false),
            (
                nested,
                r#"{"store": [{"city": "Lyon", "open": true}, {"city": "Paris", "open": true}]}"#,
                true,
            ),
            (
                r#"{"a": {"b": {"c": [{"prefix": "x"}]}}}"#,
                r#"{"a": {"b": {"c": "xyz"}}}"#,
                true,
            ),
            (
                r#"{"a": {"b": {"c": [{"prefix": "x"}]}}}"#,
                r#"{"a": {"b": {"c": "yz"}}}"#,
                false,
            ),
            (r#"{"v": [null]}"#, r#"{"v": null}"#, true),
            (r#"{"v": [{"exists": true}]}"#, r#"{"v": null}"#, false),
            (r#"{"v": [{"exists": false}]}"#, r#"{"w": 1}"#, true),
            (r#"{"a": {"b": [{"exists": false}]}}"#, r#"{"w": 1}"#, true),
            (r#"{"a": ["x"]}"#, "not json", false),
            (r#"{"a": ["x"]}"#, r#"["x"]"#, false),
            (
                r#"{"$or": [{"a": ["x"]}, {"b": {"c": [1]}}]}"#,
                r#"{"b": {"c": 1}}"#,
                true,
            ),
            (
                r#"{"$or": [{"a": ["x"]}, {"b": {"c": [1]}}]}"#,
                r#"{"b": {"c": 2}}"#,
                false,
            ),
        ];
        for (i, (policy, message, want)) in cases.iter().enumerate() {
            assert_eq!(
                body(policy, message),
                *want,
                "case {i}: {policy} on {message}"
            );
        }
    }

    #[test]
    fn invalid_policies_are_refused_with_a_reason() {
        let cases: &[(&str, FilterScope, &str)] = &[
            ("not json", FilterScope::Attributes, "not JSON"),
            ("[1]", FilterScope::Attributes, "JSON object"),
            (
                r#"{"a": "x"}"#,
                FilterScope::Attributes,
                "list of conditions",
            ),
            (r#"{"a": []}"#, FilterScope::Attributes, "empty list"),
            (r#"{"a": [["x"]]}"#, FilterScope::Attributes, "list inside"),
            (
                r#"{"a": {"b": ["x"]}}"#,
                FilterScope::Attributes,
                "filter-scope body",
            ),
            (
                r#"{"a": [{"numeric": [">", "x"]}]}"#,
                FilterScope::Attributes,
                "not a number",
            ),
            (
                r#"{"a": [{"numeric": ["<", 5, ">", 1]}]}"#,
                FilterScope::Attributes,
                "lower bound",
            ),
            (
                r#"{"a": [{"numeric": [">", 5, "<", 1]}]}"#,
                FilterScope::Attributes,
                "below its upper",
            ),
            (
                r#"{"a": [{"numeric": ["~", 5]}]}"#,
                FilterScope::Attributes,
                "numeric operator",
            ),
            (
                r#"{"a": [{"numeric": [">", 1e10]}]}"#,
                FilterScope::Attributes,
                "outside",
            ),
            (
                r#"{"a": [{"prefix": 5}]}"#,
                FilterScope::Attributes,
                "takes a string",
            ),
            (
                r#"{"a": [{"exists": "yes"}]}"#,
                FilterScope::Attributes,
                "true or false",
            ),
            (
                r#"{"a": [{"wildcard": "x*"}]}"#,
                FilterScope::Attributes,
                "unknown operator",
            ),
            (
                r#"{"a": [{"prefix": "x", "suffix": "y"}]}"#,
                FilterScope::Attributes,
                "exactly one",
            ),
            (
                r#"{"a": [{"anything-but": []}]}"#,
                FilterScope::Attributes,
                "empty list",
            ),
            (
                r#"{"a": [{"anything-but": {"numeric": [">", 1]}}]}"#,
                FilterScope::Attributes,
                "does not take",
            ),
            (
                r#"{"a": ["1"], "b": ["1"], "c": ["1"], "d": ["1"], "e": ["1"], "f": ["1"]}"#,
                FilterScope::Attributes,
                "6 keys",
            ),
            (
                r#"{"a": [1,2,3,4,5,6], "b": [1,2,3,4,5,6], "c": [1,2,3,4,5]}"#,
                FilterScope::Attributes,
                "180 value combinations",
            ),
        ];
        for (policy, scope, why) in cases {
            let err = FilterPolicy::parse(policy, *scope).unwrap_err().to_string();
            assert!(err.contains(why), "{policy}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        // Within limits: 5 keys, 150 combinations, an empty policy.
        FilterPolicy::parse(
            r#"{"a": [1,2,3,4,5,6], "b": [1,2,3,4,5], "c": [1,2,3,4,5]}"#,
            FilterScope::Attributes,
        )
        .unwrap();
        assert!(
            FilterPolicy::parse("{}", FilterScope::Attributes)
                .unwrap()
                .matches(&[], "x")
        );
    }
}
