"""Stand-ins for unit tests of one class."""


class ListPublisher:
    """An EventPublisher that keeps what it was given."""

    def __init__(self) -> None:
        self.events: list = []

    def publish(self, events) -> None:
        self.events.extend(events)

    def close(self) -> None:
        pass
