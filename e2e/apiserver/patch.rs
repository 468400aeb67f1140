//! Patches: JSON merge patch (RFC 7386, also used for strategic merge
//! patches), JSON patch (RFC 6902), and the field sets behind the
//! server-side apply approximation.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// Applies an RFC 7386 merge patch in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let map = target.as_object_mut().expect("object");
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Why a JSON patch failed: `invalid` means a well-formed patch that cannot
/// be applied (422), otherwise the patch itself is malformed (400).
#[derive(Debug)]
pub struct JsonPatchError {
    pub invalid: bool,
    pub message: String,
}

fn malformed(message: impl Into<String>) -> JsonPatchError {
    JsonPatchError {
        invalid: false,
        message: message.into(),
    }
}

fn unapplicable(message: impl Into<String>) -> JsonPatchError {
    JsonPatchError {
        invalid: true,
        message: message.into(),
    }
}

fn parse_pointer(p: &str) -> Result<Vec<String>, JsonPatchError> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(malformed(format!("invalid JSON pointer {p:?}")));
    };
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn array_index(seg: &str, len: usize, allow_end: bool) -> Result<usize, JsonPatchError> {
    if allow_end && seg == "-" {
        return Ok(len);
    }
    let i: usize = seg
        .parse()
        .map_err(|_| unapplicable(format!("invalid array index {seg:?}")))?;
    if i > len || (!allow_end && i == len) {
        return Err(unapplicable(format!("array index {i} out of bounds")));
    }
    Ok(i)
}

fn resolve<'a>(doc: &'a mut Value, path: &[String]) -> Result<&'a mut Value, JsonPatchError> {
    let mut cur = doc;
    for seg in path {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(seg)
                .ok_or_else(|| unapplicable(format!("path segment {seg:?} not found")))?,
            Value::Array(a) => {
                let i = array_index(seg, a.len(), false)?;
                &mut a[i]
            }
            _ => return Err(unapplicable(format!("cannot descend into {seg:?}"))),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &[String], value: Value) -> Result<(), JsonPatchError> {
    let Some((last, parent)) = path.split_last() else {
        *doc = value;
        return Ok(());
    };
    match resolve(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = array_index(last, a.len(), true)?;
            a.insert(i, value);
        }
        _ => return Err(unapplicable("parent of the target is not a container")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &[String]) -> Result<Value, JsonPatchError> {
    let Some((last, parent)) = path.split_last() else {
        return Err(unapplicable("cannot remove the whole document"));
    };
    match resolve(doc, parent)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| unapplicable(format!("cannot remove missing member {last:?}"))),
        Value::Array(a) => {
            let i = array_index(last, a.len(), false)?;
            Ok(a.remove(i))
        }
        _ => Err(unapplicable("parent of the target is not a container")),
    }
}

/// Applies an RFC 6902 JSON patch to `doc`; on error `doc` is unspecified.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| malformed("a JSON patch must be an array of operations"))?;
    for op in ops {
        let field = |name: &str| {
            op.get(name)
                .ok_or_else(|| malformed(format!("operation {op} has no {name:?}")))
        };
        let kind = field("op")?
            .as_str()
            .ok_or_else(|| malformed("\"op\" must be a string"))?;
        let path = parse_pointer(
            field("path")?
                .as_str()
                .ok_or_else(|| malformed("\"path\" must be a string"))?,
        )?;
        let from = || -> Result<Vec<String>, JsonPatchError> {
            parse_pointer(
                field("from")?
                    .as_str()
                    .ok_or_else(|| malformed("\"from\" must be a string"))?,
            )
        };
        match kind {
            "add" => add(doc, &path, field("value")?.clone())?,
            "remove" => {
                remove(doc, &path)?;
            }
            "replace" => {
                let target = resolve(doc, &path)?;
                *target = field("value")?.clone();
            }
            "move" => {
                let v = remove(doc, &from()?)?;
                add(doc, &path, v)?;
            }
            "copy" => {
                let v = resolve(doc, &from()?)?.clone();
                add(doc, &path, v)?;
            }
            "test" => {
                let want = field("value")?;
                let got = resolve(doc, &path)?;
                if got != want {
                    return Err(unapplicable(format!(
                        "test operation failed at {}: {got} != {want}",
                        op["path"]
                    )));
                }
            }
            other => return Err(malformed(format!("unknown operation {other:?}"))),
        }
    }
    Ok(())
}

/// A path of object keys from the root.
pub type FieldPath = Vec<String>;

/// The leaf fields an applied configuration sets: objects are descended
/// into; scalars, lists and empty objects are leaves (lists are atomic).
pub fn leaf_paths(v: &Value) -> BTreeSet<FieldPath> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

pub fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| cur.get(seg))
}

/// Removes the field at `path`, then any objects left empty above it
/// (never a top-level field).
pub fn remove_path(v: &mut Value, path: &[String]) {
    fn rec(v: &mut Value, path: &[String], depth: usize) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let Some(m) = v.as_object_mut() else { return };
        if rest.is_empty() {
            m.remove(first);
            return;
        }
        if let Some(child) = m.get_mut(first) {
            rec(child, rest, depth + 1);
            if depth > 0 && child.as_object().is_some_and(Map::is_empty) {
                m.remove(first);
            }
        }
    }
    rec(v, path, 0)
}

/// `fieldsV1` of a managedFields entry for a set of leaf paths.
pub fn fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Value::Object(Map::new());
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            cur = cur
                .as_object_mut()
                .expect("object")
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
    }

    #[test]
    fn json_patches() {
        let mut d = json!({"metadata": {"finalizers": ["a"]}, "spec": {"x": 1}});
        json_patch(
            &mut d,
            &json!([
                {"op": "test", "path": "/spec/x", "value": 1},
                {"op": "add", "path": "/metadata/finalizers/-", "value": "b"},
                {"op": "remove", "path": "/metadata/finalizers/0"},
                {"op": "replace", "path": "/spec/x", "value": 2},
                {"op": "copy", "from": "/spec/x", "path": "/spec/y"},
                {"op": "move", "from": "/spec/y", "path": "/spec/a~1b"}
            ]),
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"x": 2, "a/b": 2}})
        );
        let err = json_patch(
            &mut d,
            &json!([{"op": "test", "path": "/spec/x", "value": 9}]),
        );
        assert!(err.unwrap_err().invalid);
        let err = json_patch(&mut d, &json!({"op": "add"}));
        assert!(!err.unwrap_err().invalid);
    }

    #[test]
    fn field_sets() {
        let v = json!({"spec": {"a": 1, "b": {"c": [1]}, "e": {}}});
        let paths = leaf_paths(&v);
        assert_eq!(paths.len(), 3);
        let mut w = v.clone();
        remove_path(&mut w, &["spec".into(), "b".into(), "c".into()]);
        assert_eq!(w, json!({"spec": {"a": 1, "e": {}}}));
        assert_eq!(
            fields_v1(&paths),
            json!({"f:spec": {"f:a": {}, "f:b": {"f:c": {}}, "f:e": {}}})
        );
    }
}
