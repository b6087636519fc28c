"""The host policy for endpoints' base URLs (annotate/endpoints/hosts.py),
at save time (url_check) and at request time (CheckedResolver), and the
client's reading of answers and errors (client.py). No server needed: names
resolve through a stub."""
import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from annotate.endpoints.client import (
    CheckedResolver,
    Garbage,
    completion_parse,
    generation_errors,
    redact,
    retry_after_seconds,
)
from annotate.endpoints.hosts import HostRefused, host_policy_parse, url_check

DEFAULT = host_policy_parse(None)


def resolver_to(*addresses):
    return lambda host, port: list(addresses)


def refusal(url: str, policy=DEFAULT, *addresses) -> str:
    with pytest.raises(HostRefused) as caught:
        url_check(url, policy=policy, resolver=resolver_to(*addresses) if addresses else resolver_to())
    return str(caught.value)


@pytest.mark.parametrize("url, addresses, says", [
    ("http://169.254.169.254/v1", ["169.254.169.254"], "cloud metadata address"),
    ("http://[fd00:ec2::254]/v1", ["fd00:ec2::254"], "cloud metadata address"),
    ("http://100.100.100.200/v1", ["100.100.100.200"], "cloud metadata address"),  # in 100.64/10, "private"
    ("http://169.254.10.1:8000/v1", ["169.254.10.1"], "link-local"),
    ("http://[fe80::1]/v1", ["fe80::1"], "link-local"),
    ("http://[::ffff:169.254.169.254]/v1", ["::ffff:169.254.169.254"], "cloud metadata address"),
    ("http://0.0.0.0:8000/v1", ["0.0.0.0"], "not a unicast address"),
    ("http://224.0.0.1/v1", ["224.0.0.1"], "not a unicast address"),
    ("http://metadata.google.internal/computeMetadata/v1", ["169.254.169.254"], "metadata service's name"),
])
def test_the_default_refuses_link_local_and_metadata_addresses(url, addresses, says):
    assert says in refusal(url, DEFAULT, *addresses)


def test_every_address_a_name_resolves_to_is_checked():
    # One good address does not let a bad one through.
    message = refusal("http://models.example/v1", DEFAULT, "10.0.0.5", "169.254.169.254")
    assert "models.example" in message and "169.254.169.254 is a cloud metadata address" in message


def test_an_unresolvable_host_is_refused():
    def fail(host, port):
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(HostRefused, match="does not resolve"):
        url_check("http://no-such-host.invalid/v1", policy=DEFAULT, resolver=fail)
    assert "resolves to no address" in refusal("http://empty.example/v1", DEFAULT)


def test_the_default_allows_loopback_private_and_public_addresses():
    for address in ("127.0.0.1", "::1", "10.1.2.3", "192.168.1.9", "172.20.0.2", "fd12::1", "100.64.1.1", "8.8.8.8"):
        assert url_check("http://host.example:8000/v1/", policy=DEFAULT, resolver=resolver_to(address)) == (
            "http://host.example:8000/v1")


def test_a_narrowed_policy_allows_only_what_it_lists():
    public_only = host_policy_parse("*")
    assert "loopback" in refusal("http://localhost:8000/v1", public_only, "127.0.0.1")
    assert "private address" in refusal("http://10.0.0.1/v1", public_only, "10.0.0.1")
    assert url_check("http://api.example/v1", policy=public_only, resolver=resolver_to("8.8.4.4"))

    listed = host_policy_parse("vllm.internal, *.models.corp, 10.9.0.0/16")
    assert url_check("http://vllm.internal:8000/v1", policy=listed, resolver=resolver_to("10.1.1.1"))
    assert url_check("http://a.models.corp/v1", policy=listed, resolver=resolver_to("192.168.3.3"))
    assert url_check("http://x.example/v1", policy=listed, resolver=resolver_to("10.9.4.4"))
    assert "public address" in refusal("http://x.example/v1", listed, "8.8.8.8")
    # A listed name still never reaches a metadata address...
    assert "cloud metadata" in refusal("http://vllm.internal/v1", listed, "169.254.169.254")
    # ...unless the operator lists the address itself.
    assert url_check("http://x.example/v1", policy=host_policy_parse("169.254.169.254"),
                     resolver=resolver_to("169.254.169.254"))


@pytest.mark.parametrize("url, says", [
    ("ftp://host/v1", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("host:8000/v1", "http:// or https://"),
    ("http://user:secret@host/v1", "must not carry credentials"),
    ("http:///v1", "has no host"),
    ("http://host/v1?x=1", "no query or fragment"),
    ("http://host:99999/v1", "not a valid URL"),
])
def test_a_url_that_is_not_a_plain_http_base_url_is_refused(url, says):
    message = refusal(url, DEFAULT, "10.0.0.1")
    assert says in message and "secret" not in message


def test_a_bad_setting_names_the_entry():
    with pytest.raises(ValueError, match="'not a host!'"):
        host_policy_parse("*, not a host!")


def test_the_resolver_refuses_at_request_time_a_name_that_now_points_at_metadata(monkeypatch):
    # given: a name that resolved to a private address when the endpoint was saved
    answers = {"now": "10.0.0.7"}

    def getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers["now"], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert url_check("http://llm.example:8000/v1", policy=DEFAULT)

    async def ask():
        resolver = CheckedResolver(DEFAULT)
        try:
            return await resolver.resolve("llm.example", 8000, socket.AF_UNSPEC)
        finally:
            await resolver.close()

    def resolve():
        # On a thread of its own: the browser tests leave Playwright's loop running on this one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, ask()).result()

    assert [r["host"] for r in resolve()] == ["10.0.0.7"]
    # when: DNS changes before a request
    answers["now"] = "169.254.169.254"
    # then
    with pytest.raises(HostRefused, match="cloud metadata address"):
        resolve()


def test_answers_are_read_and_garbage_is_named():
    answer = completion_parse(b'{"model": "m", "choices": [{"message": {"content": "Hi"}, "finish_reason": "stop"}],'
                              b' "usage": {"prompt_tokens": 5, "completion_tokens": 2}}')
    assert (answer.text, answer.prompt_tokens, answer.completion_tokens, answer.finish_reason) == ("Hi", 5, 2, "stop")
    assert completion_parse(b'{"choices": [{"message": {"content": "x"}}]}').completion_tokens == 0  # no usage
    for body, says in [(b"\xff\xfe", "not JSON"), (b"[1]", "not a chat completion"), (b'{"choices": []}', "not a chat"),
                       (b'{"choices": [{"message": {"content": null}}]}', "not a chat"),
                       (b'{"choices": [{"message": {"content": "  "}}]}', "empty content")]:
        with pytest.raises(Garbage, match=says):
            completion_parse(body)


def test_retry_after_is_read_as_seconds_or_a_date():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_redact_hides_the_key_in_every_form_a_server_may_echo_it():
    key = 'sk-a/b+c"d'
    text = f'Bearer {key} or "sk-a/b+c\\"d" or sk-a%2Fb%2Bc%22d'
    assert redact(text, [key]) == 'Bearer [redacted] or "[redacted]" or [redacted]'
    assert redact("nothing here", [""]) == "nothing here"


def test_generation_settings_are_checked_by_name_type_and_range():
    assert generation_errors({"max_tokens": 64, "temperature": 0.7, "top_p": 1, "seed": 3, "stop": ["\n"]}) == {}
    errors = generation_errors({"max_tokens": 0, "temperature": "hot", "stop": [], "n": 2, "seed": 1.5,
                                "top_p": float("nan")})
    assert set(errors) == {"max_tokens", "temperature", "stop", "n", "seed", "top_p"}
    assert "max_tokens" in errors["n"]  # names the settings there are
    assert generation_errors([1]) == {"generation": generation_errors([1])["generation"]}
