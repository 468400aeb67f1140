#!/usr/bin/env python3
"""Offline validation of Kubernetes manifests, as used by scripts/chart-test.sh.

usage: validate.py --crds PATH [--crds PATH ...] [--k8s-version V ...] FILE [FILE ...]

Every document in FILEs (YAML streams) is checked:

* a custom resource (its apiVersion/kind is defined by one of the CRDs
  under the --crds paths, files or directories) against that CRD version's
  openAPIV3Schema, converted to JSON Schema: `nullable` allows null,
  `x-kubernetes-int-or-string` allows both, unknown fields are rejected
  unless `x-kubernetes-preserve-unknown-fields` (as `kubectl apply` does
  with strict field validation), other `x-kubernetes-*` keywords (CEL
  rules, list types) are skipped, and so is `format`;
* any other kind (built-in) with kubernetes-validate in strict mode, once per
  --k8s-version. A kind it has no schema for is an error.

Prints one line per document and failure; exits 1 when anything failed.
"""

import argparse
import copy
import os
import re
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def yaml_files(path):
    if os.path.isdir(path):
        for root, _, files in sorted(os.walk(path)):
            for name in sorted(files):
                if name.endswith((".yaml", ".yml")):
                    yield os.path.join(root, name)
    else:
        yield path


def convert(node):
    """openAPIV3Schema (structural) -> JSON Schema (draft 2020-12)."""
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format", "default", "description", "example"):
            continue
        if key in ("properties", "patternProperties", "definitions", "$defs"):
            out[key] = {k: convert(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = convert(value) if isinstance(value, (dict, list)) else value
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [convert(v) for v in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = out.get("anyOf", []) + [{"type": "integer"}, {"type": "string"}]
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable"):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


def load_crds(paths):
    schemas = {}
    for p in paths:
        for f in yaml_files(p):
            for doc in load_docs(f):
                if doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    raw = (version.get("schema") or {}).get("openAPIV3Schema")
                    if raw is None or not version.get("served", True):
                        continue
                    schema = convert(copy.deepcopy(raw))
                    props = schema.setdefault("properties", {})
                    # apiVersion, kind and metadata are checked separately.
                    for k in ("apiVersion", "kind", "metadata"):
                        props[k] = {}
                    schema["additionalProperties"] = False
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    schemas[key] = (schema, f)
    return schemas


def check_metadata(doc, errors):
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        errors.append("metadata: missing")
        return
    name = meta.get("name")
    if not isinstance(name, str) or not NAME.match(name) or len(name) > 253:
        errors.append(f"metadata.name: {name!r} is not a valid name")
    ns = meta.get("namespace")
    if ns is not None and (not isinstance(ns, str) or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", ns)):
        errors.append(f"metadata.namespace: {ns!r} is not a valid namespace")
    for field in ("labels", "annotations"):
        value = meta.get(field)
        if value is not None and (
            not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())
        ):
            errors.append(f"metadata.{field}: values must be strings")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crds", action="append", default=[])
    ap.add_argument("--k8s-version", action="append", default=[])
    ap.add_argument("--label", default="")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    versions = args.k8s_version or [kv.latest_version()]
    crds = load_crds(args.crds)
    failed = 0
    total = 0
    for f in args.files:
        for doc in load_docs(f):
            total += 1
            what = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            errors = []
            if key in crds:
                check_metadata(doc, errors)
                schema, crd_file = crds[key]
                validator = jsonschema.Draft202012Validator(schema)
                for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
                    if e.context:  # anyOf (nullable, int-or-string): say why
                        e = jsonschema.exceptions.best_match(e.context)
                    path = ".".join(str(p) for p in e.absolute_path) or "(root)"
                    errors.append(f"{path}: {e.message}")
                how = f"CRD schema ({os.path.basename(crd_file)})"
            else:
                for v in versions:
                    try:
                        kv.validate(doc, v, strict=True)
                    except kv.SchemaNotFoundError as e:
                        errors.append(f"no schema: {e.message} (and no CRD given for it)")
                        break
                    except kv.ValidationError as e:
                        path = ".".join(str(p) for p in e.absolute_path) or "(root)"
                        errors.append(f"k8s {v}: {path}: {e.message}")
                how = "kubernetes-validate --strict " + ",".join(versions)
            if errors:
                failed += 1
                print(f"  FAIL {args.label}{os.path.basename(f)}: {what} [{how}]")
                for e in errors:
                    print(f"       {e}")
    print(f"  {args.label}{total - failed}/{total} documents valid")
    return 1 if failed or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
