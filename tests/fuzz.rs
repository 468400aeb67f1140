//! Property test of the YAML-to-config path: hostile Gateways and
//! HTTPRoutes (braces, regexp metacharacters, huge numbers, odd Unicode in
//! every field translate reads) must never panic, and the config must pass
//! Kengine's checks (`kengine::check`) without translate's own checks having
//! had to drop anything. Deterministic: a fixed seed and a
//! bounded number of cases in CI; `KENGINE_GATEWAY_FUZZ_CASES=N` (and
//! `KENGINE_GATEWAY_FUZZ_SEED=S`) run longer.
//! The generator covers timeouts and retry backoffs (Go durations, huge
//! ones too), large weights over many headless endpoints, hostile listener
//! and route hostnames, ExternalName Services, and hostile regexps and
//! placeholders in every string field.

use serde_json::{Value, json};

use kengine_gateway::kengine::check;
use kengine_gateway::providers::files::object_from_value;
use kengine_gateway::snapshot::Snapshot;
use kengine_gateway::translate::{self, Options};

/// xorshift64*: small, deterministic, good enough to pick pieces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const PIECES: &[&str] = &[
    "{env.HOME}",
    "{file./etc/hostname}",
    "{system.hostname}",
    "{http.request.host}",
    "{http.request.uri.query.a}",
    "{",
    "}",
    "\\",
    "\\{",
    "{}",
    "{{",
    "}}",
    "(",
    ")",
    "[",
    "]",
    "([",
    "[z-a]",
    "(?<=a)b",
    "a{100000}",
    "\\1",
    "a**",
    "[a&&b]",
    "\\<",
    "(?i)",
    "\\p{Greek}",
    "*",
    ".*",
    "$",
    "^",
    "|",
    "+",
    "?",
    "#",
    "%",
    "%2F",
    "%20",
    "%zz",
    "/",
    "//",
    "/a",
    "a",
    "Z",
    "0",
    "-1",
    "99999999999999999999",
    " ",
    "\t",
    "\n",
    "\r\n",
    "\u{0}",
    "é",
    "\u{202e}",
    "\u{fffd}",
    "🙂",
    "ǅ",
    "\u{10ffff}",
    "'",
    "\"",
    ":",
    ",",
    "=",
    "&",
    ";",
    "~",
    "..",
];

fn hostile(rng: &mut Rng) -> String {
    (0..rng.below(5)).map(|_| *rng.pick(PIECES)).collect()
}

fn path_value(rng: &mut Rng) -> String {
    if rng.chance(50) {
        format!("/{}", hostile(rng))
    } else {
        hostile(rng)
    }
}

fn number(rng: &mut Rng) -> Value {
    let n: i64 = *rng.pick(&[
        0,
        1,
        80,
        301,
        302,
        404,
        65535,
        65536,
        -1,
        i64::from(i32::MAX),
    ]);
    json!(n)
}

fn duration(rng: &mut Rng) -> Value {
    if rng.chance(15) {
        return json!(hostile(rng));
    }
    json!(rng.pick(&[
        "0s",
        "1s",
        "10ms",
        "1h30m",
        "1.5s",
        "-1s",
        "1d",
        "",
        "2562047h",
        "2562048h",
        "9223372036854775807ns",
        "999999999999999999999999999999999999h",
        "99999h",
        "1h1h",
    ]))
}

fn weight(rng: &mut Rng) -> Value {
    json!(rng.pick(&[0i64, 1, 3, 80, 1_000_000, i64::from(i32::MAX), -1]))
}

/// A hostname: mostly valid, sometimes hostile.
fn hostname(rng: &mut Rng) -> String {
    if rng.chance(30) {
        let host = hostile(rng);
        return if rng.chance(50) {
            format!("*.{host}")
        } else {
            host
        };
    }
    rng.pick(&[
        "a.example.com",
        "*.example.com",
        "*.a(b",
        "*.a$|.*",
        "A.Example.COM",
        "*.com",
        "b.a.example.com",
        "127.0.0.1",
        "*",
        "a..b",
    ])
    .to_string()
}

fn header_list(rng: &mut Rng) -> Value {
    let list: Vec<_> = (0..rng.below(3))
        .map(|_| json!({"name": hostile(rng), "value": hostile(rng)}))
        .collect();
    json!(list)
}

fn path_modifier(rng: &mut Rng) -> Value {
    if rng.chance(50) {
        json!({"type": "ReplaceFullPath", "replaceFullPath": path_value(rng)})
    } else {
        json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": path_value(rng)})
    }
}

fn filter(rng: &mut Rng) -> Value {
    let strings =
        |rng: &mut Rng| -> Vec<String> { (0..rng.below(3)).map(|_| hostile(rng)).collect() };
    match rng.below(6) {
        0 => json!({"type": "RequestHeaderModifier", "requestHeaderModifier":
            {"add": header_list(rng), "set": header_list(rng), "remove": strings(rng)}}),
        1 => json!({"type": "ResponseHeaderModifier", "responseHeaderModifier":
            {"add": header_list(rng), "set": header_list(rng), "remove": strings(rng)}}),
        2 => {
            json!({"type": "URLRewrite", "urlRewrite": {"hostname": hostile(rng), "path": path_modifier(rng)}})
        }
        3 => json!({"type": "RequestRedirect", "requestRedirect": {
            "scheme": rng.pick(&["http", "https"]), "hostname": hostile(rng),
            "port": number(rng), "statusCode": number(rng), "path": path_modifier(rng)}}),
        4 => {
            json!({"type": "CORS", "cors": {"allowOrigins": strings(rng), "allowMethods": strings(rng),
            "allowHeaders": strings(rng), "exposeHeaders": strings(rng), "maxAge": number(rng),
            "allowCredentials": rng.chance(50)}})
        }
        _ => {
            json!({"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": header_list(rng)}})
        }
    }
}

fn matcher(rng: &mut Rng) -> Value {
    let kinds = ["Exact", "PathPrefix", "RegularExpression"];
    let mut m = json!({"path": {"type": rng.pick(&kinds), "value": path_value(rng)}});
    let pair = |rng: &mut Rng| json!({"type": rng.pick(&["Exact", "RegularExpression"]), "name": hostile(rng), "value": hostile(rng)});
    m["headers"] = json!((0..rng.below(3)).map(|_| pair(rng)).collect::<Vec<_>>());
    m["queryParams"] = json!((0..rng.below(3)).map(|_| pair(rng)).collect::<Vec<_>>());
    if rng.chance(30) {
        m["method"] = json!(rng.pick(&["GET", "POST", "DELETE"]));
    }
    m
}

/// Headless Services `h0`.. with 1 to 53 ready endpoints each, and an
/// ExternalName Service `ext` whose name may be hostile.
fn services(rng: &mut Rng, docs: &mut Vec<Value>) {
    let primes = [
        1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53,
    ];
    for h in 0..rng.below(17) {
        let name = format!("h{h}");
        docs.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80, "targetPort": 8080}]}}));
        let n = primes[h % primes.len()];
        let endpoints: Vec<_> = (0..n)
            .map(|i| json!({"addresses": [format!("10.1.{h}.{i}")], "conditions": {"ready": true}}))
            .collect();
        docs.push(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": "default",
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": [{"port": 8080}]}),
        );
    }
    let external = if rng.chance(50) {
        hostile(rng)
    } else {
        "api.example.com".to_string()
    };
    docs.push(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "ext", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": external, "ports": [{"port": 80}]}}));
}

fn backend_ref(rng: &mut Rng) -> Value {
    let name = match rng.below(10) {
        0..=4 => "svc".to_string(),
        5 => "ext".to_string(),
        6 => hostile(rng),
        _ => format!("h{}", rng.below(17)),
    };
    json!({"name": name, "port": rng.pick(&[80, 81, 0]), "weight": weight(rng)})
}

fn documents(rng: &mut Rng) -> Vec<Value> {
    let mut docs = vec![
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "kengine"},
            "spec": {"controllerName": "kengine.khulnasoft.com/gateway-controller"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "default"},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}),
    ];
    services(rng, &mut docs);
    let listeners: Vec<_> = (0..1 + rng.below(2))
        .map(|i| {
            let mut l = json!({"name": format!("l{i}{}", hostile(rng)), "protocol": "HTTP",
                "port": rng.pick(&[80, 8080, 2019, 1])});
            if rng.chance(40) {
                l["hostname"] = json!(hostname(rng));
            }
            l
        })
        .collect();
    docs.push(
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {"gatewayClassName": "kengine", "listeners": listeners}}),
    );
    for r in 0..1 + rng.below(3) {
        let rules: Vec<_> = (0..1 + rng.below(3))
            .map(|_| {
                let matches: Vec<_> = (0..rng.below(3)).map(|_| matcher(rng)).collect();
                let filters: Vec<_> = (0..rng.below(3)).map(|_| filter(rng)).collect();
                let count = if rng.chance(10) { 13 } else { 1 + rng.below(3) };
                let backends: Vec<_> = (0..count).map(|_| backend_ref(rng)).collect();
                let mut rule =
                    json!({"matches": matches, "filters": filters, "backendRefs": backends});
                if rng.chance(30) {
                    rule["timeouts"] =
                        json!({"request": duration(rng), "backendRequest": duration(rng)});
                }
                if rng.chance(15) {
                    rule["retry"] = json!({"attempts": number(rng), "backoff": duration(rng),
                        "codes": [rng.pick(&[500, 503, 0, 999])]});
                }
                if rng.chance(10) {
                    rule["name"] = json!(hostile(rng));
                }
                rule
            })
            .collect();
        docs.push(
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": format!("r{r}"), "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}],
                "hostnames": (0..1 + rng.below(2)).map(|_| hostname(rng)).collect::<Vec<_>>(),
                "rules": rules}}),
        );
    }
    docs
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn hostile_routes_never_panic_and_always_pass_kengines_checks() {
    let cases = env("KENGINE_GATEWAY_FUZZ_CASES", 300);
    let seed = env("KENGINE_GATEWAY_FUZZ_SEED", 0x6b67_6675_7a7a);
    let mut rng = Rng(seed | 1);
    let mut served = 0;
    for case in 0..cases {
        let docs = documents(&mut rng);
        let objects: Vec<_> = docs
            .iter()
            .filter_map(|d| object_from_value(d.clone()).ok().flatten())
            .collect();
        let snapshot = Snapshot::from_objects(objects);
        let result =
            std::panic::catch_unwind(|| translate::translate(&snapshot, &Options::default()));
        let output = result.unwrap_or_else(|_| {
            panic!(
                "case {case} (seed {seed}) panicked on:\n{}",
                serde_json::to_string_pretty(&docs).unwrap()
            )
        });
        if let Err(e) = check::config(output.config()) {
            panic!(
                "case {case} (seed {seed}): {e}\n{}",
                serde_json::to_string_pretty(&docs).unwrap()
            );
        }
        // The checks inside translate are a safety net: a rule or listener
        // they had to drop is a translate bug, as a refused config would be.
        let status = serde_json::to_string(&(
            output.status.http_routes.values().collect::<Vec<_>>(),
            output.status.gateways.values().collect::<Vec<_>>(),
        ))
        .unwrap();
        if let Some(at) = status.find("Kengine would refuse") {
            panic!(
                "case {case} (seed {seed}): translate's check caught {}\n{}",
                &status[at..status.len().min(at + 300)],
                serde_json::to_string_pretty(&docs).unwrap()
            );
        }
        served += usize::from(output.config().apps.http.is_some());
    }
    // The generator must reach the config, not only the parser's errors.
    assert!(
        cases < 20 || served as u64 > cases / 4,
        "only {served} of {cases} cases produced a config"
    );
}
