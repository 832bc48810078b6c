//! AWS Signature Version 4: published known answers (the AWS SigV4 test suite, the IAM
//! documentation example), requests captured from botocore 1.43 and the AWS CLI 1.45, the
//! sign/verify round trip under random requests, and every refusal.

use proptest::prelude::*;
use ssm_session::sigv4::{self, Credentials, Expected, Request, SigV4Error, Verified};

const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2015-08-30T12:36:00Z, the time of the AWS test suite.
const SUITE_TIME: u64 = 1_440_938_160;

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

/// The scope of the AWS test suite's requests.
const SUITE: Expected = Expected {
    region: "us-east-1",
    service: "service",
    signed_headers: &[],
};
/// What the gateway expects of an `AmazonSSM.*` call.
const SSM: Expected = Expected {
    region: "us-east-1",
    service: "ssm",
    signed_headers: &["x-amz-target"],
};
/// What the gateway expects of the agents' channel endpoints.
const CHANNELS: Expected = Expected {
    region: "us-east-1",
    service: "ssmmessages",
    signed_headers: &[],
};

fn secret_of(key: &str) -> Option<String> {
    (key == KEY_ID).then(|| SECRET.to_owned())
}

/// One case of the AWS SigV4 test suite (aws-c-auth's `aws-sig-v4-test-suite`, as vendored in
/// botocore's tests/unit/auth/aws4_testsuite): the `.req` request and the `.authz` header.
struct SuiteCase {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: &'static str,
    /// Headers of the `.req` file besides `Host` and `X-Amz-Date`.
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    token: Option<&'static str>,
    signed_headers: &'static str,
    signature: &'static str,
}

impl SuiteCase {
    fn headers(&self) -> Vec<(String, String)> {
        let mut headers = owned(&[("Host", "example.amazonaws.com")]);
        headers.extend(owned(self.headers));
        headers
    }

    fn credentials(&self) -> Credentials {
        Credentials::new(KEY_ID, SECRET, self.token)
    }

    fn authorization(&self) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={}, Signature={}",
            self.signed_headers, self.signature
        )
    }
}

const VANILLA: &str = "host;x-amz-date";
const VANILLA_SIGNATURE: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";
const STS_TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

fn suite() -> Vec<SuiteCase> {
    let case = |name, method, path, query, signed_headers, signature| SuiteCase {
        name,
        method,
        path,
        query,
        headers: &[],
        body: b"",
        token: None,
        signed_headers,
        signature,
    };
    vec![
        case("get-vanilla", "GET", "/", "", VANILLA, VANILLA_SIGNATURE),
        case(
            "get-vanilla-query-order-key-case",
            "GET",
            "/",
            "Param2=value2&Param1=value1",
            VANILLA,
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        case(
            "get-vanilla-query-order-key",
            "GET",
            "/",
            "Param1=value2&Param1=Value1",
            VANILLA,
            "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
        ),
        case(
            "get-vanilla-query-order-value",
            "GET",
            "/",
            "Param1=value2&Param1=value1",
            VANILLA,
            "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
        ),
        case(
            "get-vanilla-query-order-encoded",
            "GET",
            "/",
            "Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
            VANILLA,
            "371d3713e185cc334048618a97f809c9ffe339c62934c032af5a0e595648fcac",
        ),
        case(
            "get-vanilla-query-unreserved",
            "GET",
            "/",
            "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=\
             -._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            VANILLA,
            "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
        ),
        case(
            "get-vanilla-utf8-query",
            "GET",
            "/",
            "ሴ=bar",
            VANILLA,
            "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        ),
        case(
            "get-vanilla-empty-query-key",
            "GET",
            "/",
            "Param1=value1",
            VANILLA,
            "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
        ),
        case(
            "get-utf8",
            "GET",
            "/ሴ",
            "",
            VANILLA,
            "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
        ),
        case(
            "get-unreserved",
            "GET",
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            "",
            VANILLA,
            "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
        ),
        case(
            "normalize-path/get-space",
            "GET",
            "/example space/",
            "",
            VANILLA,
            "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        ),
        case(
            "normalize-path/get-slashes",
            "GET",
            "//example//",
            "",
            VANILLA,
            "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
        ),
        case(
            "normalize-path/get-slash",
            "GET",
            "//",
            "",
            VANILLA,
            VANILLA_SIGNATURE,
        ),
        case(
            "normalize-path/get-slash-dot-slash",
            "GET",
            "/./",
            "",
            VANILLA,
            VANILLA_SIGNATURE,
        ),
        case(
            "normalize-path/get-slash-pointless-dot",
            "GET",
            "/./example",
            "",
            VANILLA,
            "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
        ),
        case(
            "normalize-path/get-relative",
            "GET",
            "/example/..",
            "",
            VANILLA,
            VANILLA_SIGNATURE,
        ),
        case(
            "normalize-path/get-relative-relative",
            "GET",
            "/example1/example2/../..",
            "",
            VANILLA,
            VANILLA_SIGNATURE,
        ),
        case(
            "normalize-path/get-special-character",
            "GET",
            "/example/$delete",
            "",
            VANILLA,
            "a853c9b21b528b19643d00910d35b83a10c366a10833ceefb45edd6c80e40f27",
        ),
        SuiteCase {
            headers: &[
                ("My-Header1", "value2"),
                ("My-Header1", "value2"),
                ("My-Header1", "value1"),
            ],
            ..case(
                "get-header-key-duplicate",
                "GET",
                "/",
                "",
                "host;my-header1;x-amz-date",
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            )
        },
        SuiteCase {
            headers: &[("My-Header1", "value1\n  value2\n     value3")],
            ..case(
                "get-header-value-multiline",
                "GET",
                "/",
                "",
                "host;my-header1;x-amz-date",
                "cfd34249e4b1c8d6b91ef74165d41a32e5fab3306300901bb65a51a73575eefd",
            )
        },
        SuiteCase {
            headers: &[
                ("My-Header1", "value4"),
                ("My-Header1", "value1"),
                ("My-Header1", "value3"),
                ("My-Header1", "value2"),
            ],
            ..case(
                "get-header-value-order",
                "GET",
                "/",
                "",
                "host;my-header1;x-amz-date",
                "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
            )
        },
        SuiteCase {
            headers: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
            ..case(
                "get-header-value-trim",
                "GET",
                "/",
                "",
                "host;my-header1;my-header2;x-amz-date",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            )
        },
        SuiteCase {
            token: Some("6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267"),
            ..case(
                "get-vanilla-with-session-token",
                "GET",
                "/",
                "",
                "host;x-amz-date;x-amz-security-token",
                "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
            )
        },
        SuiteCase {
            token: Some(STS_TOKEN),
            ..case(
                "post-sts-token/post-sts-header-before",
                "POST",
                "/",
                "",
                "host;x-amz-date;x-amz-security-token",
                "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
            )
        },
        case(
            "post-vanilla",
            "POST",
            "/",
            "",
            VANILLA,
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
        case(
            "post-vanilla-query",
            "POST",
            "/",
            "Param1=value1",
            VANILLA,
            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11",
        ),
        SuiteCase {
            headers: &[("My-Header1", "value1")],
            ..case(
                "post-header-key-sort",
                "POST",
                "/",
                "",
                "host;my-header1;x-amz-date",
                "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c",
            )
        },
        SuiteCase {
            headers: &[("My-Header1", "VALUE1")],
            ..case(
                "post-header-value-case",
                "POST",
                "/",
                "",
                "host;my-header1;x-amz-date",
                "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
            )
        },
        SuiteCase {
            headers: &[("Content-Type", "application/x-www-form-urlencoded")],
            body: b"Param1=value1",
            ..case(
                "post-x-www-form-urlencoded",
                "POST",
                "/",
                "",
                "content-type;host;x-amz-date",
                "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            )
        },
        SuiteCase {
            headers: &[(
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf8",
            )],
            body: b"Param1=value1",
            ..case(
                "post-x-www-form-urlencoded-parameters",
                "POST",
                "/",
                "",
                "content-type;host;x-amz-date",
                "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe",
            )
        },
    ]
}

#[test]
fn sign_reproduces_the_aws_test_suite() {
    for case in suite() {
        let headers = case.headers();
        let request = Request {
            method: case.method,
            path: case.path,
            query: case.query,
            headers: &headers,
            body: case.body,
        };
        let added = sigv4::sign(
            &request,
            &case.credentials(),
            "us-east-1",
            "service",
            SUITE_TIME,
        );
        let mut expected = vec![("x-amz-date".to_owned(), "20150830T123600Z".to_owned())];
        if let Some(token) = case.token {
            expected.push(("x-amz-security-token".to_owned(), token.to_owned()));
        }
        expected.push(("authorization".to_owned(), case.authorization()));
        assert_eq!(added, expected, "{}", case.name);
    }
}

#[test]
fn verify_accepts_the_aws_test_suite() {
    for case in suite() {
        let mut headers = case.headers();
        headers.push(("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()));
        if let Some(token) = case.token {
            headers.push(("X-Amz-Security-Token".to_owned(), token.to_owned()));
        }
        headers.push(("Authorization".to_owned(), case.authorization()));
        let request = Request {
            method: case.method,
            path: case.path,
            query: case.query,
            headers: &headers,
            body: case.body,
        };
        let verified = sigv4::verify(&request, &SUITE, secret_of, SUITE_TIME)
            .unwrap_or_else(|error| panic!("{}: {error}", case.name));
        assert_eq!(verified.access_key_id, KEY_ID, "{}", case.name);
        assert_eq!(verified.region, "us-east-1", "{}", case.name);
        assert_eq!(verified.service, "service", "{}", case.name);
        assert_eq!(
            verified.signed_headers.join(";"),
            case.signed_headers,
            "{}",
            case.name
        );
        assert_eq!(
            verified.session_token.as_deref(),
            case.token,
            "{}",
            case.name
        );
        assert_eq!(verified.request_time, SUITE_TIME, "{}", case.name);
    }
}

/// `post-sts-header-after`: the token header was added after signing, so it is not signed;
/// the signature is `post-vanilla`'s, and the unsigned token is not reported.
#[test]
fn verify_ignores_an_unsigned_session_token() {
    let headers = owned(&[
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", "20150830T123600Z"),
        ("X-Amz-Security-Token", STS_TOKEN),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
    ]);
    let request = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: b"",
    };
    let verified = sigv4::verify(&request, &SUITE, secret_of, SUITE_TIME).unwrap();
    assert_eq!(verified.session_token, None);
}

/// The worked example of the AWS documentation ("Create a signed AWS API request": IAM
/// ListUsers), also what botocore 1.43 gives for it.
#[test]
fn iam_list_users_example_of_the_aws_documentation() {
    let headers = owned(&[
        ("Host", "iam.amazonaws.com"),
        (
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
    ]);
    let request = Request {
        method: "GET",
        path: "/",
        query: "Action=ListUsers&Version=2010-05-08",
        headers: &headers,
        body: b"",
    };
    let credentials = Credentials::new(KEY_ID, SECRET, None);
    let added = sigv4::sign(&request, &credentials, "us-east-1", "iam", SUITE_TIME);
    assert_eq!(
        added.last().unwrap().1,
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
         SignedHeaders=content-type;host;x-amz-date, \
         Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    );
    let signed = [headers.as_slice(), &added].concat();
    let request = Request {
        headers: &signed,
        ..request
    };
    let verified = sigv4::verify(
        &request,
        &Expected {
            service: "iam",
            ..SUITE
        },
        secret_of,
        SUITE_TIME,
    )
    .unwrap();
    assert_eq!(verified.service, "iam");
}

/// A request as an HTTP server sees it: request line, headers (values trimmed, as httparse
/// gives them), body.
struct Raw {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn parse(text: &str) -> Raw {
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap().split(' ');
        let method = request_line.next().unwrap().to_owned();
        let target = request_line.next().unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_owned(), value.trim().to_owned())
            })
            .collect();
        Raw {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        }
    }
}

/// What `AWS_ACCESS_KEY_ID=AKIDEXAMPLE aws ssm start-session --target i-0123456789abcdef0
/// --endpoint-url http://127.0.0.1:9999` (aws-cli 1.45.11, botocore 1.43.11) sent, byte for
/// byte. Host carries the port; Accept-Encoding, User-Agent and amz-sdk-* are not signed.
const CLI_START_SESSION: &str = "POST / HTTP/1.1\r\n\
    Host: 127.0.0.1:9999\r\n\
    Accept-Encoding: identity\r\n\
    X-Amz-Target: AmazonSSM.StartSession\r\n\
    Content-Type: application/x-amz-json-1.1\r\n\
    User-Agent: aws-cli/1.45.11 md/Botocore#1.43.11 ua/2.1 os/linux#6.18.44-fc-v782 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/Z,b,g,N,D cfg/retry-mode#legacy botocore/1.43.11\r\n\
    X-Amz-Date: 20261128T155723Z\r\n\
    Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261128/us-east-1/ssm/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=8db9584e9c38b7ac2a3c727052738e4436feb6707e01b7156e3f9971ed8d798e\r\n\
    amz-sdk-invocation-id: 8409992f-261c-4290-a457-51e70176e8fa\r\n\
    amz-sdk-request: attempt=1\r\n\
    Content-Length: 33\r\n\
    \r\n\
    {\"Target\": \"i-0123456789abcdef0\"}";
/// 2026-11-28T15:57:23Z.
const CLI_START_SESSION_TIME: u64 = 1_795_881_443;

/// The same CLI with temporary credentials (`AWS_SESSION_TOKEN`) in eu-west-1:
/// `aws ssm terminate-session --session-id user-0a1b2c3d4e5f67890`.
const CLI_TERMINATE_WITH_TOKEN: &str = "POST / HTTP/1.1\r\n\
    Host: 127.0.0.1:9999\r\n\
    Accept-Encoding: identity\r\n\
    X-Amz-Target: AmazonSSM.TerminateSession\r\n\
    Content-Type: application/x-amz-json-1.1\r\n\
    User-Agent: aws-cli/1.45.11 md/Botocore#1.43.11 ua/2.1 os/linux#6.18.44-fc-v782 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/Z,N,b,D,g cfg/retry-mode#legacy botocore/1.43.11\r\n\
    X-Amz-Date: 20261128T155732Z\r\n\
    X-Amz-Security-Token: FwoGZXIvYXdzEXAMPLEtokenvalue//+==\r\n\
    Authorization: AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEGATEWAY01/20261128/eu-west-1/ssm/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=7fd0ad19d68f2104fa0cd1e3601246141f99ac6e16d0590e23f47e9d95ae5a20\r\n\
    amz-sdk-invocation-id: 5252bad7-da2f-4b7a-b5dc-93581662bcf3\r\n\
    amz-sdk-request: attempt=1\r\n\
    Content-Length: 39\r\n\
    \r\n\
    {\"SessionId\": \"user-0a1b2c3d4e5f67890\"}";
/// 2026-11-28T15:57:32Z.
const CLI_TERMINATE_TIME: u64 = 1_795_881_452;

#[test]
fn verify_accepts_what_the_aws_cli_sends() {
    let raw = Raw::parse(CLI_START_SESSION);
    let verified =
        sigv4::verify(&raw.request(), &SSM, secret_of, CLI_START_SESSION_TIME + 1).unwrap();
    assert_eq!(
        (
            verified.access_key_id.as_str(),
            verified.region.as_str(),
            verified.service.as_str()
        ),
        (KEY_ID, "us-east-1", "ssm")
    );
    assert_eq!(
        verified.signed_headers,
        ["content-type", "host", "x-amz-date", "x-amz-target"]
    );

    let raw = Raw::parse(CLI_TERMINATE_WITH_TOKEN);
    let secret = |key: &str| {
        (key == "ASIAEXAMPLEGATEWAY01").then_some("gatewaytestsecret/EXAMPLE+key0123456789")
    };
    let verified = sigv4::verify(
        &raw.request(),
        &Expected {
            region: "eu-west-1",
            ..SSM
        },
        secret,
        CLI_TERMINATE_TIME,
    )
    .unwrap();
    assert_eq!(verified.region, "eu-west-1");
    assert_eq!(
        verified.session_token.as_deref(),
        Some("FwoGZXIvYXdzEXAMPLEtokenvalue//+==")
    );
}

#[test]
fn a_cli_request_changed_in_transit_is_refused() {
    let tampered = CLI_START_SESSION.replace("i-0123456789abcdef0", "i-0123456789abcdef1");
    let raw = Raw::parse(&tampered);
    assert_eq!(
        sigv4::verify(&raw.request(), &SSM, secret_of, CLI_START_SESSION_TIME),
        Err(SigV4Error::SignatureMismatch)
    );
    let retargeted = CLI_START_SESSION.replace("AmazonSSM.StartSession", "AmazonSSM.SendCommand");
    let raw = Raw::parse(&retargeted);
    assert_eq!(
        sigv4::verify(&raw.request(), &SSM, secret_of, CLI_START_SESSION_TIME),
        Err(SigV4Error::SignatureMismatch)
    );
    // Unsigned headers may change (a proxy rewriting User-Agent does no harm).
    let relabelled = CLI_START_SESSION.replace("aws-cli/1.45.11 md", "curl/8 md");
    let raw = Raw::parse(&relabelled);
    assert!(sigv4::verify(&raw.request(), &SSM, secret_of, CLI_START_SESSION_TIME).is_ok());
}

/// botocore 1.43 `SigV4Auth("ssm", "us-east-1").add_auth` on `POST http://127.0.0.1:9999/`
/// with botocore's clock frozen at 2026-01-15T09:30:05Z.
const BOTOCORE_TIME: u64 = 1_768_469_405;
const BOTOCORE_BODY: &[u8] = br#"{"Target": "i-0123456789abcdef0", "Reason": "tests"}"#;

#[test]
fn sign_matches_botocore_for_an_ssm_call() {
    let headers = owned(&[
        ("Host", "127.0.0.1:9999"),
        ("X-Amz-Target", "AmazonSSM.StartSession"),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("User-Agent", "tests"),
    ]);
    let request = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: BOTOCORE_BODY,
    };
    let added = sigv4::sign(
        &request,
        &Credentials::new(KEY_ID, SECRET, None),
        "us-east-1",
        "ssm",
        BOTOCORE_TIME,
    );
    assert_eq!(
        added,
        owned(&[
            ("x-amz-date", "20260115T093005Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260115/us-east-1/ssm/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
                 Signature=ffcf7ded679d169c5455e68ca0d28621314e574978c345ed7c6f75e962b6667f"
            ),
        ])
    );
    let signed = [headers.as_slice(), &added].concat();
    let request = Request {
        headers: &signed,
        ..request
    };
    assert!(sigv4::verify(&request, &SSM, secret_of, BOTOCORE_TIME).is_ok());
}

/// botocore 1.43 on `GET http://127.0.0.1:9999/v1/control-channel/mi-1%3Aa%20b/./x//y?
/// role=publish_subscribe&b=a%20b&a=` for `ssmmessages`: the path as sent still has its
/// escapes, and the canonical URI encodes them again (`%253A`).
#[test]
fn escaped_paths_are_signed_as_botocore_signs_them() {
    let expected = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260115/us-east-1/ssmmessages/aws4_request, \
                    SignedHeaders=host;x-amz-date, \
                    Signature=cd25613f34f1d5e20d2ed17bb5b4eca9cbe0e7d328edf3687248c8438cf2ec2a";
    let headers = owned(&[("host", "127.0.0.1:9999")]);
    let request = Request {
        method: "GET",
        path: "/v1/control-channel/mi-1%3Aa%20b/./x//y",
        query: "role=publish_subscribe&b=a%20b&a=",
        headers: &headers,
        body: b"",
    };
    let credentials = Credentials::new(KEY_ID, SECRET, None);
    let added = sigv4::sign(
        &request,
        &credentials,
        "us-east-1",
        "ssmmessages",
        BOTOCORE_TIME,
    );
    assert_eq!(added.last().unwrap().1, expected);
    let signed = [headers.as_slice(), &added].concat();
    let request = Request {
        headers: &signed,
        ..request
    };
    assert!(sigv4::verify(&request, &CHANNELS, secret_of, BOTOCORE_TIME).is_ok());
}

/// botocore 1.43 with a caller-set `Date` header: it signs `Date` (as Python's `formatdate`
/// writes it, zone `-0000`) instead of sending `X-Amz-Date`.
#[test]
fn verify_accepts_a_date_header_instead_of_x_amz_date() {
    let headers = owned(&[
        ("Host", "127.0.0.1:9999"),
        ("X-Amz-Target", "AmazonSSM.GetConnectionStatus"),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("Date", "Thu, 15 Jan 2026 09:30:05 -0000"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260115/us-east-1/ssm/aws4_request, \
             SignedHeaders=content-type;date;host;x-amz-target, \
             Signature=cc1dac9e9d70da2c7ed325d5e114bd7251d7822779760451475bae7982a8702c",
        ),
    ]);
    let request = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: br#"{"Target": "mi-0123456789abcdef0"}"#,
    };
    assert!(sigv4::verify(&request, &SSM, secret_of, BOTOCORE_TIME).is_ok());
}

// ------------------------------------------------------------------------------- refusals

/// The suite's `my-header1` request, signed by us: the starting point of the refusals.
fn signed_request() -> Vec<(String, String)> {
    let mut headers = owned(&[("Host", "example.amazonaws.com"), ("My-Header1", "value1")]);
    let request = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: b"",
    };
    let credentials = Credentials::new(KEY_ID, SECRET, None);
    headers.extend(sigv4::sign(
        &request,
        &credentials,
        "us-east-1",
        "service",
        SUITE_TIME,
    ));
    headers
}

fn verify_headers(headers: &[(String, String)], now: u64) -> Result<Verified, SigV4Error> {
    let request = Request {
        method: "POST",
        path: "/",
        query: "",
        headers,
        body: b"",
    };
    sigv4::verify(&request, &SUITE, secret_of, now)
}

/// `signed_request()` with its Authorization value passed through `edit`.
fn with_authorization(edit: impl Fn(&str) -> String) -> Vec<(String, String)> {
    signed_request()
        .into_iter()
        .map(|(name, value)| match name.as_str() {
            "authorization" => (name, edit(&value)),
            _ => (name, value),
        })
        .collect()
}

fn without(name: &str) -> Vec<(String, String)> {
    signed_request()
        .into_iter()
        .filter(|(header, _)| !header.eq_ignore_ascii_case(name))
        .collect()
}

#[test]
fn the_starting_point_verifies() {
    let verified = verify_headers(&signed_request(), SUITE_TIME).unwrap();
    assert_eq!(
        verified.signed_headers,
        ["host", "my-header1", "x-amz-date"]
    );
}

#[test]
fn refuses_a_request_without_authorization() {
    let error = verify_headers(&without("authorization"), SUITE_TIME).unwrap_err();
    assert_eq!(error, SigV4Error::MissingAuthorization);
    assert_eq!(error.aws_code(), "MissingAuthenticationTokenException");
}

#[test]
fn refuses_malformed_authorization_headers() {
    let signature = "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c";
    let scope = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";
    let signed = "host;my-header1;x-amz-date";
    let auth = |credential: &str, signed: &str, signature: &str| {
        format!(
            "AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed}, \
             Signature={signature}"
        )
    };
    let cases = [
        "AWS4-HMAC-SHA256".to_owned(),
        "AWS4-HMAC-SHA256 ".to_owned(),
        format!("AWS4-HMAC-SHA256 SignedHeaders={signed}, Signature={signature}"),
        format!("AWS4-HMAC-SHA256 Credential={scope}, Signature={signature}"),
        format!("AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={signed}"),
        // No commas between the components.
        auth(scope, signed, signature).replace(", ", " "),
        auth(
            "AKIDEXAMPLE/20150830/us-east-1/aws4_request",
            signed,
            signature,
        ),
        auth(
            "AKIDEXAMPLE/2015083/us-east-1/service/aws4_request",
            signed,
            signature,
        ),
        auth(
            "AKIDEXAMPLE/20150830/us-east-1/service/aws5_request",
            signed,
            signature,
        ),
        auth(
            "/20150830/us-east-1/service/aws4_request",
            signed,
            signature,
        ),
        auth(scope, "Host;My-Header1;X-Amz-Date", signature),
        auth(scope, "host;;x-amz-date", signature),
        auth(scope, "host;host;my-header1;x-amz-date", signature),
        auth(scope, signed, signature)
            .replace("Credential=", &format!("Credential={scope}, Credential=")),
        auth(scope, signed, signature) + ", Expires=60",
        auth(scope, signed, &signature.replace('c', "g")),
    ];
    for authorization in cases {
        let error =
            verify_headers(&with_authorization(|_| authorization.clone()), SUITE_TIME).unwrap_err();
        assert!(
            matches!(error, SigV4Error::Malformed(_)),
            "{authorization}: {error:?}"
        );
        assert_eq!(error.aws_code(), "IncompleteSignatureException");
    }

    let mut twice = signed_request();
    let authorization = twice.last().unwrap().clone();
    twice.push(authorization);
    assert!(matches!(
        verify_headers(&twice, SUITE_TIME),
        Err(SigV4Error::Malformed(_))
    ));
}

#[test]
fn refuses_a_signature_of_the_wrong_length() {
    for cut in [63, 65] {
        let headers = with_authorization(|value| {
            let (head, signature) = value.split_once("Signature=").unwrap();
            let signature = format!("{signature}0");
            format!("{head}Signature={}", &signature[..cut])
        });
        let error = verify_headers(&headers, SUITE_TIME).unwrap_err();
        assert!(
            matches!(error, SigV4Error::Malformed(_)),
            "{cut}: {error:?}"
        );
        assert!(error.to_string().contains("64 hexadecimal digits"));
    }
}

#[test]
fn refuses_other_algorithms() {
    for scheme in [
        "AWS4-ECDSA-P256-SHA256",
        "AWS4-HMAC-SHA512",
        "aws4-hmac-sha256",
    ] {
        let headers = with_authorization(|value| value.replacen("AWS4-HMAC-SHA256", scheme, 1));
        let error = verify_headers(&headers, SUITE_TIME).unwrap_err();
        assert!(
            matches!(error, SigV4Error::UnsupportedAlgorithm(_)),
            "{error:?}"
        );
        assert_eq!(error.aws_code(), "IncompleteSignatureException");
    }
    for other in ["AWS AKIDEXAMPLE:c2lnbmF0dXJl", "Bearer abc", ""] {
        let error =
            verify_headers(&with_authorization(|_| other.to_owned()), SUITE_TIME).unwrap_err();
        assert!(
            matches!(error, SigV4Error::UnsupportedAlgorithm(_)),
            "{error:?}"
        );
    }
}

#[test]
fn refuses_a_signature_that_does_not_cover_host() {
    let headers =
        with_authorization(|value| value.replace("SignedHeaders=host;", "SignedHeaders="));
    assert_eq!(
        verify_headers(&headers, SUITE_TIME),
        Err(SigV4Error::HeaderNotSigned("\"host\"".to_owned()))
    );
}

#[test]
fn refuses_a_signature_that_does_not_cover_a_required_header() {
    // The CLI's StartSession signs x-amz-target; the same call signed without it is refused,
    // whether the header is sent or not.
    let raw = Raw::parse(CLI_START_SESSION);
    assert!(sigv4::verify(&raw.request(), &SSM, secret_of, CLI_START_SESSION_TIME).is_ok());
    let headers = owned(&[
        ("Host", "127.0.0.1:9999"),
        ("X-Amz-Target", "AmazonSSM.StartSession"),
    ]);
    let request = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: b"{}",
    };
    let mut signed: Vec<(String, String)> = headers[..1].to_vec();
    signed.extend(sigv4::sign(
        &Request {
            headers: &signed.clone(),
            ..request
        },
        &Credentials::new(KEY_ID, SECRET, None),
        "us-east-1",
        "ssm",
        SUITE_TIME,
    ));
    let without_target = Request {
        headers: &signed,
        ..request
    };
    let error = sigv4::verify(&without_target, &SSM, secret_of, SUITE_TIME).unwrap_err();
    assert_eq!(
        error,
        SigV4Error::HeaderNotSigned("\"x-amz-target\"".to_owned())
    );
    assert_eq!(error.aws_code(), "IncompleteSignatureException");
    assert!(error.to_string().contains("x-amz-target"), "{error}");
    signed.push(headers[1].clone());
    let with_unsigned_target = Request {
        headers: &signed,
        ..request
    };
    assert_eq!(
        sigv4::verify(&with_unsigned_target, &SSM, secret_of, SUITE_TIME),
        Err(error)
    );
    // An endpoint that requires no such header accepts it.
    let channels = Expected {
        service: "ssm",
        ..CHANNELS
    };
    assert!(sigv4::verify(&with_unsigned_target, &channels, secret_of, SUITE_TIME).is_ok());
}

#[test]
fn refuses_a_scope_for_another_region_or_service() {
    let raw = Raw::parse(CLI_START_SESSION);
    let at = CLI_START_SESSION_TIME;
    let error = sigv4::verify(
        &raw.request(),
        &Expected {
            region: "eu-west-1",
            ..SSM
        },
        secret_of,
        at,
    )
    .unwrap_err();
    assert_eq!(
        error,
        SigV4Error::WrongRegion {
            scope: "\"us-east-1\"".to_owned(),
            expected: "eu-west-1".to_owned()
        }
    );
    assert_eq!(error.aws_code(), "InvalidSignatureException");
    assert!(error.to_string().contains("region eu-west-1"), "{error}");

    for service in ["kms", "ssmmessages", "ec2messages"] {
        let error =
            sigv4::verify(&raw.request(), &Expected { service, ..SSM }, secret_of, at).unwrap_err();
        assert_eq!(
            error,
            SigV4Error::WrongService {
                scope: "\"ssm\"".to_owned(),
                expected: service.to_owned()
            }
        );
        assert_eq!(error.aws_code(), "InvalidSignatureException");
    }
    // The scope is checked before the key is looked up: no secret is needed to refuse.
    let kms = Expected {
        service: "kms",
        ..SSM
    };
    assert!(matches!(
        sigv4::verify(&raw.request(), &kms, |_| None::<String>, at),
        Err(SigV4Error::WrongService { .. })
    ));
}

#[test]
fn verified_requests_carry_their_time_and_signature() {
    let raw = Raw::parse(CLI_START_SESSION);
    let verified = sigv4::verify(&raw.request(), &SSM, secret_of, CLI_START_SESSION_TIME).unwrap();
    assert_eq!(verified.request_time, CLI_START_SESSION_TIME);
    assert_eq!(
        hex::encode(verified.signature),
        "8db9584e9c38b7ac2a3c727052738e4436feb6707e01b7156e3f9971ed8d798e"
    );
}

#[test]
fn refuses_a_request_missing_a_signed_header() {
    let error = verify_headers(&without("my-header1"), SUITE_TIME).unwrap_err();
    assert_eq!(
        error,
        SigV4Error::SignedHeaderMissing("\"my-header1\"".to_owned())
    );
    let error = verify_headers(&without("host"), SUITE_TIME).unwrap_err();
    assert!(matches!(error, SigV4Error::SignedHeaderMissing(_)));
}

#[test]
fn refuses_a_request_without_a_readable_date() {
    // Unsign x-amz-date so that its absence is about the date, not a missing signed header.
    let unsigned = |headers: Vec<(String, String)>| -> Vec<(String, String)> {
        headers
            .into_iter()
            .map(|(name, value)| match name.as_str() {
                "authorization" => (name, value.replace(";x-amz-date", "")),
                _ => (name, value),
            })
            .collect()
    };
    let error = verify_headers(&unsigned(without("x-amz-date")), SUITE_TIME).unwrap_err();
    assert_eq!(error, SigV4Error::MissingDate);
    assert_eq!(error.aws_code(), "IncompleteSignatureException");

    for bad in [
        "2015-08-30T12:36:00Z",
        "20150830T123600",
        "20151330T123600Z",
        "",
    ] {
        let headers: Vec<(String, String)> = signed_request()
            .into_iter()
            .map(|(name, value)| match name.as_str() {
                "x-amz-date" => (name, bad.to_owned()),
                _ => (name, value),
            })
            .collect();
        let error = verify_headers(&headers, SUITE_TIME).unwrap_err();
        assert!(
            matches!(error, SigV4Error::InvalidDate(_)),
            "{bad}: {error:?}"
        );
    }
}

#[test]
fn refuses_a_scope_for_another_day() {
    let headers = with_authorization(|value| value.replace("/20150830/", "/20150831/"));
    let error = verify_headers(&headers, SUITE_TIME).unwrap_err();
    assert_eq!(
        error,
        SigV4Error::ScopeDateMismatch {
            scope: "20150831".to_owned(),
            request: "20150830".to_owned()
        }
    );
    assert_eq!(error.aws_code(), "InvalidSignatureException");
}

#[test]
fn accepts_five_minutes_of_clock_skew_each_way_and_no_more() {
    let headers = signed_request();
    let skew = sigv4::MAX_CLOCK_SKEW_SECONDS;
    assert!(verify_headers(&headers, SUITE_TIME - skew).is_ok());
    assert!(verify_headers(&headers, SUITE_TIME + skew).is_ok());

    // The server is ahead: the signature has expired.
    let error = verify_headers(&headers, SUITE_TIME + skew + 1).unwrap_err();
    assert_eq!(
        error,
        SigV4Error::RequestExpired {
            request_time: "20150830T123600Z".to_owned(),
            server_time: "20150830T124101Z".to_owned()
        }
    );
    assert_eq!(error.aws_code(), "InvalidSignatureException");
    // The server is behind: the request comes from the future.
    let error = verify_headers(&headers, SUITE_TIME - skew - 1).unwrap_err();
    assert!(matches!(error, SigV4Error::RequestExpired { .. }));
    // Clocks at the ends of the range do not overflow.
    for now in [0, u64::MAX] {
        assert!(matches!(
            verify_headers(&headers, now),
            Err(SigV4Error::RequestExpired { .. })
        ));
    }
}

#[test]
fn refuses_an_unknown_access_key() {
    let request_headers = signed_request();
    let request = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &request_headers,
        body: b"",
    };
    let error = sigv4::verify(&request, &SUITE, |_| None::<String>, SUITE_TIME).unwrap_err();
    assert_eq!(
        error,
        SigV4Error::UnknownAccessKey("\"AKIDEXAMPLE\"".to_owned())
    );
    assert_eq!(error.aws_code(), "UnrecognizedClientException");
    assert!(
        error
            .to_string()
            .contains("security token included in the request is invalid")
    );
}

#[test]
fn refuses_a_wrong_signature_without_revealing_the_right_one() {
    let right = signed_request().last().unwrap().1.clone();
    let right = right.rsplit_once("Signature=").unwrap().1.to_owned();
    let wrong = format!(
        "{}{}",
        if right.starts_with('0') { '1' } else { '0' },
        &right[1..]
    );
    let headers = with_authorization(|value| value.replace(&right, &wrong));
    let error = verify_headers(&headers, SUITE_TIME).unwrap_err();
    assert_eq!(error, SigV4Error::SignatureMismatch);
    assert_eq!(error.aws_code(), "InvalidSignatureException");
    assert!(!error.to_string().contains(&right));
    assert!(!format!("{error:?}").contains(&right));

    // Upper-case hex is the same signature.
    let headers = with_authorization(|value| value.replace(&right, &right.to_uppercase()));
    assert!(verify_headers(&headers, SUITE_TIME).is_ok());
}

#[test]
fn payload_hash_header_is_checked_against_the_body() {
    let body = br#"{"SessionId":"s-1"}"#;
    let sign_with = |content_sha256: &str| {
        let mut headers = owned(&[
            ("host", "127.0.0.1:9999"),
            ("x-amz-content-sha256", content_sha256),
        ]);
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body,
        };
        let credentials = Credentials::new(KEY_ID, SECRET, None);
        headers.extend(sigv4::sign(
            &request,
            &credentials,
            "us-east-1",
            "ssm",
            SUITE_TIME,
        ));
        headers
    };
    let verify_body = |headers: &[(String, String)], body: &[u8]| {
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers,
            body,
        };
        sigv4::verify(
            &request,
            &Expected {
                signed_headers: &[],
                ..SSM
            },
            secret_of,
            SUITE_TIME,
        )
    };

    let hash = "c0dc5a0f7c1fa1dc70c0b2dd9b3da3bc4a0b6d0b47fbb3c34ee4ad9bd75b9d36";
    let real_hash = {
        // Computed independently of the crate: SHA-256 of the body.
        let digest = ring::digest::digest(&ring::digest::SHA256, body);
        hex::encode(digest.as_ref())
    };
    assert_ne!(hash, real_hash);

    let headers = sign_with(&real_hash);
    let verified = verify_body(&headers, body).unwrap();
    assert!(
        verified
            .signed_headers
            .contains(&"x-amz-content-sha256".to_owned())
    );
    assert_eq!(
        verify_body(&headers, b"{}"),
        Err(SigV4Error::PayloadHashMismatch)
    );

    let headers = sign_with(hash);
    let error = verify_body(&headers, body).unwrap_err();
    assert_eq!(error, SigV4Error::PayloadHashMismatch);
    assert_eq!(error.aws_code(), "InvalidSignatureException");

    // UNSIGNED-PAYLOAD would leave the body out: refused, whatever the body.
    let headers = sign_with("UNSIGNED-PAYLOAD");
    for body in [&b"anything at all"[..], body] {
        let error = verify_body(&headers, body).unwrap_err();
        assert_eq!(error, SigV4Error::UnsignedPayload);
        assert_eq!(error.aws_code(), "InvalidSignatureException");
        assert!(error.to_string().contains("sign the body"), "{error}");
    }
    // Also when the header was added after signing.
    let mut headers = sign_with(&real_hash);
    for (name, value) in &mut headers {
        if name == "x-amz-content-sha256" {
            *value = "UNSIGNED-PAYLOAD".to_owned();
        }
    }
    assert_eq!(
        verify_body(&headers, body),
        Err(SigV4Error::UnsignedPayload)
    );

    // Streaming (chunk-signed) payloads are not supported.
    let headers = sign_with("STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
    assert_eq!(
        verify_body(&headers, body),
        Err(SigV4Error::PayloadHashMismatch)
    );
}

#[test]
fn debug_output_hides_secrets() {
    let credentials = Credentials::new(KEY_ID, SECRET, Some(STS_TOKEN));
    let shown = format!("{credentials:?}");
    assert!(shown.contains(KEY_ID));
    assert!(
        !shown.contains(SECRET) && !shown.contains(STS_TOKEN),
        "{shown}"
    );

    let headers = owned(&[("host", "example.amazonaws.com")]);
    let request = Request {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
        body: b"",
    };
    let added = sigv4::sign(&request, &credentials, "us-east-1", "service", SUITE_TIME);
    let signed = [headers.as_slice(), &added].concat();
    let request = Request {
        headers: &signed,
        ..request
    };
    assert!(!format!("{request:?}").contains(STS_TOKEN));
    let verified = sigv4::verify(&request, &SUITE, secret_of, SUITE_TIME).unwrap();
    assert_eq!(verified.session_token.as_deref(), Some(STS_TOKEN));
    assert!(!format!("{verified:?}").contains(STS_TOKEN));
}

// ----------------------------------------------------------------------------- properties

/// A random request with a host header, and the secret and scope to sign it with.
#[derive(Debug, Clone)]
struct Case {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    region: String,
    service: String,
    secret: String,
    time: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let segments = prop::collection::vec("\\PC{0,8}", 0..5);
    let headers = prop::collection::vec(("x-[a-zA-Z]{1,8}", "\\PC{0,20}"), 0..5);
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
        segments,
        "\\PC{0,40}",
        headers,
        prop::collection::vec(any::<u8>(), 0..64),
        "[a-z]{2}-[a-z]{4,9}-[1-9]",
        "[a-z]{2,12}",
        "[A-Za-z0-9/+]{1,40}",
        0u64..4_102_444_800,
        "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
    )
        .prop_map(
            |(method, segments, query, mut headers, body, region, service, secret, time, host)| {
                headers.insert(0, ("Host".to_owned(), host));
                Case {
                    method: method.to_owned(),
                    path: format!("/{}", segments.join("/")),
                    query,
                    headers,
                    body,
                    region,
                    service,
                    secret,
                    time,
                }
            },
        )
}

impl Case {
    fn request(&self) -> Request<'_> {
        Request {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body: &self.body,
        }
    }

    /// The case with the signature headers added.
    fn signed(mut self) -> Case {
        let credentials = Credentials::new(KEY_ID, self.secret.clone(), None);
        let added = sigv4::sign(
            &self.request(),
            &credentials,
            &self.region,
            &self.service,
            self.time,
        );
        self.headers.extend(added);
        self
    }

    fn verify_at(&self, now: u64, secret: &str) -> Result<Verified, SigV4Error> {
        let expected = Expected {
            region: &self.region,
            service: &self.service,
            signed_headers: &[],
        };
        sigv4::verify(
            &self.request(),
            &expected,
            |key| (key == KEY_ID).then_some(secret),
            now,
        )
    }
}

proptest! {
    #[test]
    fn signed_requests_verify(case in case(), skew in -300i64..=300) {
        let case = case.signed();
        let now = case.time.saturating_add_signed(skew);
        let verified = case.verify_at(now, &case.secret).unwrap();
        prop_assert_eq!(&verified.region, &case.region);
        prop_assert_eq!(&verified.service, &case.service);
        prop_assert!(verified.signed_headers.contains(&"host".to_owned()));
        prop_assert!(verified.signed_headers.contains(&"x-amz-date".to_owned()));
        prop_assert_eq!(verified.request_time, case.time);
    }

    #[test]
    fn any_change_after_signing_breaks_the_signature(
        case in case(),
        change in 0usize..7,
        pick in any::<prop::sample::Index>(),
    ) {
        let mut case = case.signed();
        let mut secret = case.secret.clone();
        match change {
            0 => case.body.push(b'x'),
            1 => {
                // A signed header value: one of the random ones, or host.
                let signed: Vec<usize> = (0..case.headers.len())
                    .filter(|&i| case.headers[i].0.starts_with("x-") || case.headers[i].0 == "Host")
                    .filter(|&i| !case.headers[i].0.starts_with("x-amz-"))
                    .collect();
                let i = signed[pick.index(signed.len())];
                case.headers[i].1.push('x');
            }
            2 => case.path.push_str("/x"),
            3 => case.query.push_str("&zz=1"),
            4 => {
                let from = format!("/{}/{}/", case.region, case.service);
                let to = format!("/{}x/{}/", case.region, case.service);
                for (name, value) in &mut case.headers {
                    if name == "authorization" {
                        *value = value.replacen(&from, &to, 1);
                    }
                }
                // Sent to that region's endpoint: the scope passes, the signature does not.
                case.region.push('x');
            }
            5 => secret.push('x'),
            _ => case.method.push('X'),
        }
        prop_assert_eq!(case.verify_at(case.time, &secret), Err(SigV4Error::SignatureMismatch));
    }

    /// Hostile input: the verifier answers, it never panics.
    #[test]
    fn verify_never_panics(
        authorization in prop_oneof![
            "\\PC{0,120}",
            "AWS4-HMAC-SHA256 (Credential=[A-Za-z0-9/_-]{0,40})?\
             (, SignedHeaders=[a-z;-]{0,20})?(, Signature=[0-9a-fA-F]{0,70})?",
        ],
        date in prop_oneof!["[0-9TZ]{0,20}", "\\PC{0,30}"],
        path in "\\PC{0,30}",
        query in "\\PC{0,30}",
        now in any::<u64>(),
    ) {
        let headers = vec![
            ("host".to_owned(), "h".to_owned()),
            ("x-amz-date".to_owned(), date),
            ("authorization".to_owned(), authorization),
        ];
        let request = Request {
            method: "GET",
            path: &path,
            query: &query,
            headers: &headers,
            body: b"",
        };
        let _ = sigv4::verify(&request, &SUITE, secret_of, now);
    }
}
