"""doctor.logs.escape: what a client sent, as it may appear in a log line."""

import logging

from doctor.logs import escape


def test_control_characters_are_shown_escaped_so_no_line_can_be_forged():
    forged = "c1\ndoctor consumer notified at 1795000000.0\r\x1b[31mred\x1b[0m\x00\x7f\x85"
    shown = escape(forged)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert shown == ("c1\\ndoctor consumer notified at 1795000000.0\\r\\x1b[31mred\\x1b[0m"
                     "\\x00\\x7f\\x85")


def test_unicode_line_separators_and_bidi_controls_are_escaped_too():
    assert escape("a\u2028b\u2029c\u202ed\ufeff") == "a\\u2028b\\u2029c\\u202ed\\ufeff"


def test_plain_text_is_unchanged_and_long_text_is_cut_with_its_length():
    assert escape("compute-1") == "compute-1"
    assert escape("ünïcode host") == "ünïcode host"
    shown = escape("x" * 1_000_000)
    assert shown == "x" * 200 + "...[cut, 1000000 chars]"
    assert escape("abcdef", limit=3) == "abc...[cut, 6 chars]"


def test_escaping_never_makes_the_line_longer_than_the_limit_without_saying_so():
    shown = escape("\x1b" * 100)
    assert shown.startswith("\\x1b" * 50) and shown.endswith("...[cut, 100 chars]")
    assert len(shown) <= 200 + len("...[cut, 100 chars]")


def test_other_values_are_shown_by_their_repr_escaped():
    assert escape({"a": "b"}) == "{'a': 'b'}"
    assert escape(None) == "None"
    assert "\n" not in escape(["x\ny"])


def test_an_escaped_value_logs_as_one_line(caplog):
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("host %s is down", escape("h\nFAKE line"))
    assert caplog.records[0].getMessage() == "host h\\nFAKE line is down"
