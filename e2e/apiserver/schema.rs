//! Structural-schema defaulting of custom resources, the way the real
//! apiextensions server applies `default` values from a CRD's
//! `openAPIV3Schema` (validation and pruning are not emulated).

use serde_json::Value;

/// Fills in `default`s from `schema` into `obj`, recursively (including
/// inside values that were just defaulted).
pub fn apply_defaults(obj: &mut Value, schema: &Value) {
    match obj {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (k, prop) in props {
                    let Some(default) = prop.get("default") else {
                        continue;
                    };
                    let nullable = prop.get("nullable").and_then(Value::as_bool) == Some(true);
                    match map.get(k) {
                        None => {
                            map.insert(k.clone(), default.clone());
                        }
                        Some(Value::Null) if !nullable => {
                            map.insert(k.clone(), default.clone());
                        }
                        _ => {}
                    }
                }
                for (k, v) in map.iter_mut() {
                    if let Some(prop) = props.get(k) {
                        apply_defaults(v, prop);
                    }
                }
            } else if let Some(additional @ Value::Object(_)) = schema.get("additionalProperties") {
                for v in map.values_mut() {
                    apply_defaults(v, additional);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for v in items {
                    apply_defaults(v, item_schema);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_recursively() {
        let schema = json!({"properties": {"spec": {"properties": {
            "rules": {"default": [{}], "items": {"properties": {
                "weight": {"default": 1},
                "kind": {"default": "Service"}
            }}},
            "labels": {"additionalProperties": {"properties": {"x": {"default": "y"}}}},
            "keep": {"default": "d"}
        }}}});
        let mut obj = json!({"spec": {"keep": "mine", "labels": {"a": {}}}});
        apply_defaults(&mut obj, &schema);
        assert_eq!(
            obj,
            json!({"spec": {"keep": "mine", "labels": {"a": {"x": "y"}},
                "rules": [{"weight": 1, "kind": "Service"}]}})
        );
    }
}
