"""The one URL redactor: whatever may hold a secret (user info, query values, fragment) is ***."""

from __future__ import annotations

import pytest

from doctor.redact import redact_url, scrub


@pytest.mark.parametrize("url, shown", [
    ("redis://:s3cret@10.0.0.5:6379", "redis://:***@10.0.0.5:6379"),
    ("redis://doctor:s3cret@10.0.0.5:6379?db=2", "redis://***:***@10.0.0.5:6379?db=***"),
    ("redis://doctor@10.0.0.5", "redis://***@10.0.0.5"),
    ("redis://10.0.0.5:26379?sentinel=mymaster&sentinel_password=s3cret",
     "redis://10.0.0.5:26379?sentinel=***&sentinel_password=***"),
    ("etcd3+http://h:2379?token=abc", "etcd3+http://h:2379?token=***"),
    ("file:///var/lib/doctor/coordination", "file:///var/lib/doctor/coordination"),
    ("zookeeper://a:b:c@zk:2181", "zookeeper://***:***@zk:2181"),
    ("http://user:pw@127.0.0.1:8080/failure?token=secret#frag",
     "http://***:***@127.0.0.1:8080/failure?token=***#***"),
    ("https://hooks.example.com/T0/B0?abc123&sig=x", "https://hooks.example.com/T0/B0?***&sig=***"),
    ("http://[::1]:12346/failure", "http://[::1]:12346/failure"),
    ("http://127.0.0.1:12346/failure", "http://127.0.0.1:12346/failure"),
    ("http://[::1/failure", "<unparsable URL>"),
])
def test_redact_url_hides_credentials_query_values_and_fragment(url, shown):
    assert redact_url(url) == shown


def test_scrub_removes_the_password_and_secret_options_from_text():
    url = "redis://:p%40ss-s3cret@127.0.0.1:1?sentinel_password=other-s3cret&db=2"
    text = scrub("AUTH p%40ss-s3cret failed; sentinel said other-s3cret; db 2", url)
    assert text == "AUTH *** failed; sentinel said ***; db 2"
    assert scrub("nothing to hide", "http://[::1") == "nothing to hide"


def test_a_clients_url_is_shown_escaped_and_cut():
    from doctor.redact import redact_url

    # (urlsplit drops newlines and tabs itself)
    assert redact_url("http://h/x\x1b[31m\x00red") == "http://h/x\\x1b[31m\\x00red"
    assert redact_url("http://h/" + "p" * 5000).endswith("...[cut, 5009 chars]")
