from monitor.detector import HostDetector, HostState


def make(misses=3, replies=2):
    detector = HostDetector(misses_before_down=misses, replies_before_up=replies)
    assert detector.on_reply() is HostState.UP
    return detector


def test_one_lost_packet_is_a_suspicion_not_a_verdict():
    detector = make()
    assert detector.on_miss() is HostState.SUSPECT
    assert detector.on_reply() is HostState.UP
    assert detector.state is HostState.UP


def test_down_after_consecutive_misses_only():
    detector = make(misses=3)
    assert detector.on_miss() is HostState.SUSPECT
    assert detector.on_miss() is None
    assert detector.on_miss() is HostState.DOWN
    assert detector.on_miss() is None  # reported once


def test_a_reply_resets_the_miss_count():
    detector = make(misses=3)
    detector.on_miss()
    detector.on_miss()
    detector.on_reply()
    detector.on_miss()
    assert detector.on_miss() is None
    assert detector.state is HostState.SUSPECT


def test_up_needs_consecutive_replies():
    detector = make(misses=1, replies=3)
    assert detector.on_miss() is HostState.DOWN
    assert detector.on_reply() is None
    assert detector.on_reply() is None
    detector.on_miss()  # a miss in between starts the count again
    assert detector.on_reply() is None
    assert detector.on_reply() is None
    assert detector.on_reply() is HostState.UP


def test_held_verdict_stays_suspect_until_allowed():
    detector = make(misses=2)
    detector.on_miss(may_go_down=False)
    assert detector.on_miss(may_go_down=False) is None
    assert detector.state is HostState.SUSPECT and detector.verdict_due
    assert detector.on_miss(may_go_down=True) is HostState.DOWN


def test_unknown_host_that_never_answers_goes_down():
    detector = HostDetector(misses_before_down=2, replies_before_up=1)
    assert detector.on_miss() is HostState.SUSPECT
    assert detector.on_miss() is HostState.DOWN
