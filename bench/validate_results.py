#!/usr/bin/python3
"""Validates benchmark JSON files against bench/schema.json, plus the checks a schema cannot
express (min <= median <= max, row names built from id + params, unique names).

Uses the jsonschema package when it is importable; Debian 12's python3-jsonschema is not part
of scripts/install-deps.sh (the build machines lack it and have no network, and
scripts/test.sh runs install-deps.sh), so a small validator of the subset of JSON Schema that
schema.json uses is built in. It refuses schema keywords it does not know, so the schema can
never silently grow a rule this file ignores.

Exit status: 0 valid, 1 invalid (every problem printed), 2 usage or unreadable file.
"""
import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ANNOTATIONS = {"$schema", "$id", "title", "description", "$defs", "examples", "format"}
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


class SubsetValidator:
    def __init__(self, schema):
        self.root = schema

    def resolve(self, ref):
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref supported, got {ref}")
        node = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        return node

    def errors(self, value, schema=None, path="$"):
        schema = self.root if schema is None else schema
        out = []
        for key in schema:
            if key in ANNOTATIONS:
                continue
            if key not in self.KEYWORDS:
                raise ValueError(f"schema keyword {key!r} at {path} is not supported by the "
                                 "built-in validator: extend bench/validate_results.py")
        if "$ref" in schema:
            out += self.errors(value, self.resolve(schema["$ref"]), path)
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(TYPES[t](value) for t in types):
                return out + [f"{path}: expected {' or '.join(types)}, got {json.dumps(value)[:60]}"]
        if "const" in schema and value != schema["const"]:
            out.append(f"{path}: expected {schema['const']!r}, got {value!r}")
        if "enum" in schema and value not in schema["enum"]:
            out.append(f"{path}: {value!r} is not one of {schema['enum']}")
        if "anyOf" in schema:
            if all(self.errors(value, s, path) for s in schema["anyOf"]):
                out.append(f"{path}: matches none of anyOf: " +
                           "; ".join(e for s in schema["anyOf"] for e in self.errors(value, s, path)))
        if TYPES["number"](value):
            if "minimum" in schema and value < schema["minimum"]:
                out.append(f"{path}: {value} < minimum {schema['minimum']}")
        if isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                out.append(f"{path}: string shorter than {schema['minLength']}")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                out.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                out.append(f"{path}: fewer than {schema['minItems']} items")
            if "items" in schema:
                for i, item in enumerate(value):
                    out += self.errors(item, schema["items"], f"{path}[{i}]")
        if isinstance(value, dict):
            for req in schema.get("required", []):
                if req not in value:
                    out.append(f"{path}: missing required {req!r}")
            if "minProperties" in schema and len(value) < schema["minProperties"]:
                out.append(f"{path}: fewer than {schema['minProperties']} properties")
            props = schema.get("properties", {})
            extra = schema.get("additionalProperties", True)
            for k, v in value.items():
                if k in props:
                    out += self.errors(v, props[k], f"{path}.{k}")
                elif extra is False:
                    out.append(f"{path}: unexpected property {k!r}")
                elif isinstance(extra, dict):
                    out += self.errors(v, extra, f"{path}.{k}")
        return out

    KEYWORDS = {"$ref", "type", "const", "enum", "anyOf", "minimum", "minLength", "pattern",
                "minItems", "items", "required", "minProperties", "properties",
                "additionalProperties"}


def schema_errors(doc, schema):
    try:
        import jsonschema  # noqa: F401  (Debian: python3-jsonschema, optional)
    except ImportError:
        return SubsetValidator(schema).errors(doc)
    validator = jsonschema.Draft202012Validator(schema)
    return [f"$.{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
            for e in validator.iter_errors(doc)]


def fmt_value(v):
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def semantic_errors(doc):
    out = []
    names = set()
    for d, dev in enumerate(doc.get("devices", [])):
        where = f"$.devices[{d}]"
        if dev.get("name") in names:
            out.append(f"{where}: duplicate device name {dev.get('name')!r}")
        names.add(dev.get("name"))
        rows = set()
        for r, row in enumerate(dev.get("rows", [])):
            at = f"{where}.rows[{r}]"
            expect = row["id"] + "/" + ",".join(f"{k}={fmt_value(v)}" for k, v in row["params"].items())
            if row["name"] != expect:
                out.append(f"{at}: name {row['name']!r} is not id/params {expect!r}")
            if row["name"] in rows:
                out.append(f"{at}: duplicate row {row['name']!r}")
            rows.add(row["name"])
            for key in ("gpu_us", "wall_us", "record_us", "host_cpu_us"):
                s = row.get(key)
                if s and not (s["min"] <= s["median"] <= s["max"]):
                    out.append(f"{at}.{key}: not min <= median <= max: {s}")
            if (row.get("gpu_gbps") is not None or row.get("gpu_copy_fraction") is not None) and not row.get("gpu_us"):
                out.append(f"{at}: gpu_gbps / gpu_copy_fraction without gpu_us")
            near = row.get("copy_shader_gbps_near")
            if near is not None:
                for frac, rate in (("copy_fraction_near", "gbps"), ("gpu_copy_fraction_near", "gpu_gbps")):
                    if row.get(rate) is None:
                        continue
                    f = row.get(frac)
                    if f is None or abs(f * near - row[rate]) > 1e-6 * max(1.0, row[rate]):
                        out.append(f"{at}: {frac} {f} is not {rate} / copy_shader_gbps_near")
            elif row.get("copy_fraction_near") is not None or row.get("gpu_copy_fraction_near") is not None:
                out.append(f"{at}: _near fractions without copy_shader_gbps_near")
            read = (dev.get("ceilings") or {}).get("read_shader_gbps")
            for frac, rate in (("read_fraction", "gbps"), ("gpu_read_fraction", "gpu_gbps")):
                f = row.get(frac)
                if f is None:
                    continue
                if not read or row.get(rate) is None or abs(f * read - row[rate]) > 1e-6 * max(1.0, row[rate]):
                    out.append(f"{at}: {frac} {f} is not {rate} / the ceilings' read_shader_gbps {read}")
            threads, cpu = row.get("host_threads"), row.get("host_cpu_us")
            if threads is not None and (not cpu or abs(threads * row["wall_us"]["median"] - cpu["median"])
                                        > 1e-6 * max(1.0, cpu["median"])):
                out.append(f"{at}: host_threads {threads} is not host_cpu_us / wall_us (medians)")
            # Streamed rows (param stream_steps) time the first token too; it arrives within the
            # repetition, so its median and maximum are at most the wall time's.
            first = row.get("first_token_us")
            if ("stream_steps" in row["params"]) != (first is not None):
                out.append(f"{at}: first_token_us must be present exactly on rows with param stream_steps")
            elif first is not None and (first["median"] > row["wall_us"]["median"] or
                                        first["max"] > row["wall_us"]["max"]):
                out.append(f"{at}: first_token_us {first} beyond the repetition's wall_us {row['wall_us']}")
            if row["id"].startswith("K.") and row.get("gbps") is not None and "bytes" not in row:
                out.append(f"{at}: K rows state the bytes behind gbps")
            if doc.get("tool") == "vkrnn-bench":
                if row.get("dispatches") is None or row.get("submissions") is None:
                    out.append(f"{at}: vkrnn-bench rows count dispatches and submissions")
                # Streamed rows submit their own pieces, which are not profiled.
                if first is None and (row.get("gpu_us") is None) == bool(dev.get("timestamps")):
                    out.append(f"{at}: gpu_us must be present exactly when the device has timestamps")
                if first is not None and row.get("gpu_us") is not None:
                    out.append(f"{at}: streamed rows have no gpu_us (their pieces are not profiled)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="validate benchmark JSON against bench/schema.json")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--schema", default=os.path.join(HERE, "schema.json"))
    ap.add_argument("--tool", help="require this top-level tool")
    ap.add_argument("--min-rows", type=int, default=0, help="require at least this many rows per device")
    args = ap.parse_args(argv)
    try:
        with open(args.schema) as f:
            schema = json.load(f)
    except (OSError, ValueError) as e:
        print(f"validate_results: cannot read schema {args.schema}: {e}", file=sys.stderr)
        return 2
    bad = 0
    for path in args.files:
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            print(f"{path}: unreadable: {e}", file=sys.stderr)
            return 2
        problems = schema_errors(doc, schema)
        if not problems:
            problems = semantic_errors(doc)
            if args.tool and doc["tool"] != args.tool:
                problems.append(f"$.tool: {doc['tool']!r}, expected {args.tool!r}")
            for d, dev in enumerate(doc["devices"]):
                if len(dev["rows"]) < args.min_rows:
                    problems.append(f"$.devices[{d}]: {len(dev['rows'])} rows, expected >= {args.min_rows}"
                                    f" (skipped: {dev['skipped']})")
        for p in problems:
            print(f"{path}: {p}", file=sys.stderr)
        if problems:
            bad += 1
        else:
            rows = sum(len(d["rows"]) for d in doc["devices"])
            print(f"{path}: valid ({len(doc['devices'])} device(s), {rows} row(s))")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
