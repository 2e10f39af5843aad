"""The VIM config file and API body checks: errors name the field."""

from __future__ import annotations

import socket

import pytest

from vim.spec import VimSpecError, load_config_file, resolve_ipv4, validate

GOOD = {"auth_url": "https://keystone.example:5000/v3", "username": "admin",
        "password": "pw", "project_name": "admin"}


def write(tmp_path, text: str) -> str:
    path = tmp_path / "vim.yaml"
    path.write_text(text)
    return str(path)


def test_tacker_file_with_defaults(tmp_path):
    path = write(tmp_path, "auth_url: http://198.18.0.10:5000/v3\nusername: u\npassword: p\n"
                           "project_name: demo\ncert_verify: 'False'\n")
    spec = load_config_file(path)
    assert spec == {"auth_url": "http://198.18.0.10:5000/v3", "username": "u", "password": "p",
                    "project_name": "demo", "cert_verify": False,
                    "project_domain_name": "Default", "user_domain_name": "Default"}


@pytest.mark.parametrize(("text", "field", "words"), [
    ("username: u\npassword: p\nproject_name: d\n", "auth_url", "required"),
    ("auth_url: keystone:5000\nusername: u\npassword: p\nproject_name: d\n", "auth_url",
     "not an http(s) URL"),
    ("auth_url: ftp://k/\nusername: u\npassword: p\nproject_name: d\n", "auth_url",
     "not an http(s) URL"),
    ("auth_url: http://k:99999/\nusername: u\npassword: p\nproject_name: d\n", "auth_url",
     "port"),
    ("auth_url: http://k/\nusername: u\npassword: p\nproject_name: d\nregion: x\n", "region",
     "unknown key"),
    ("auth_url: http://k/\nusername: 5\npassword: p\nproject_name: d\n", "username",
     "must be a string"),
    ("auth_url: http://k/\nusername: u\npassword: p\nproject_name: d\ncert_verify: maybe\n",
     "cert_verify", "true or false"),
    ("auth_url: http://k/\nusername: u\nproject_name: d\n", "password", "required"),
    ("- a\n- b\n", "config_file", "mapping"),
    ("auth_url: [\n", "config_file", "not valid YAML"),
])
def test_bad_files_name_the_field(tmp_path, text, field, words):
    with pytest.raises(VimSpecError) as caught:
        load_config_file(write(tmp_path, text))
    assert caught.value.field == field
    assert words in str(caught.value)


def test_missing_file():
    with pytest.raises(VimSpecError, match="config_file"):
        load_config_file("/nonexistent/vim.yaml")


def test_partial_update_and_password_not_echoed():
    assert validate({"auth_url": "http://198.18.0.11/"}, partial=True) == {
        "auth_url": "http://198.18.0.11/"}
    with pytest.raises(VimSpecError) as caught:
        validate({**GOOD, "password": 12345678})
    assert caught.value.field == "password"
    assert "12345678" not in str(caught.value)


def test_credentials_in_the_url_are_refused():
    with pytest.raises(VimSpecError, match="credentials"):
        validate({**GOOD, "auth_url": "http://admin:pw@k/"})


def test_resolution_is_ipv4(monkeypatch):
    assert resolve_ipv4("http://127.0.0.1:5000/v3") == "127.0.0.1"
    assert resolve_ipv4("http://localhost/") == "127.0.0.1"

    def no_such_name(*_args, **_kwargs):  # no DNS query leaves the machine in a test
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with pytest.raises(VimSpecError, match="auth_url"):
        resolve_ipv4("http://keystone.site-a/")
