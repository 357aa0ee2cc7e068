"""WWW-Authenticate challenges and distribution error bodies."""

import httpx
import pytest

from capsa.images.auth import Challenge, error_detail, parse_challenges


def test_bearer_challenge():
    [challenge] = parse_challenges(['Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                                    'scope="repository:samalba/my-app:pull,push"'])  # fmt: skip
    assert challenge == Challenge("bearer", {"realm": "https://auth.docker.io/token",
                                             "service": "registry.docker.io",
                                             "scope": "repository:samalba/my-app:pull,push"})  # fmt: skip


def test_basic_challenge_and_case_of_names():
    [challenge] = parse_challenges(['BASIC Realm="capsa-registry"'])
    assert challenge.scheme == "basic" and challenge.params == {"realm": "capsa-registry"}


def test_escaped_quotes_tokens_and_spaces():
    [challenge] = parse_challenges([r'Bearer realm = "a \"quoted\" \\ realm" , service=svc,error=insufficient_scope'])
    assert challenge.params == {"realm": 'a "quoted" \\ realm', "service": "svc", "error": "insufficient_scope"}


def test_several_challenges_in_one_header_and_across_headers():
    challenges = parse_challenges(['Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
                                   'Bearer realm="https://t/token"'])  # fmt: skip
    assert [c.scheme for c in challenges] == ["newauth", "basic", "bearer"]
    assert challenges[0].params == {"realm": "apps", "type": "1", "title": 'Login to "apps"'}
    assert challenges[1].params == {"realm": "simple"}


def test_scheme_without_params_and_token68():
    challenges = parse_challenges(["Negotiate abc+/d==, Bearer", "Basic"])
    assert challenges == [Challenge("negotiate", {}, "abc+/d=="), Challenge("bearer"), Challenge("basic")]


@pytest.mark.parametrize("value", ["", "   ", ",,", '"junk"'])
def test_empty_or_junk(value):
    assert parse_challenges([value]) == []


def response(status, body, **kwargs) -> httpx.Response:
    return httpx.Response(status, content=body, request=httpx.Request("GET", "http://r/v2/"), **kwargs)


@pytest.mark.parametrize("body,detail", [
    (b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}',
     "unauthorized: authentication required"),
    (b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"},{"code":"DENIED"}]}',
     "manifest unknown: manifest unknown; denied"),
    (b'{"details":"incorrect username or password"}', "incorrect username or password"),
    (b'{"error":"invalid_grant","error_description":"bad\\npassword"}', "bad password"),
    (b"<html>nope</html>", ""),
    (b"", ""),
    (b"[1, 2]", ""),
])  # fmt: skip
def test_error_detail(body, detail):
    assert error_detail(response(401, body)) == detail
